"""The web console in a real browser (Debian's Chromium, headless, driven by Selenium through chromedriver)
against a real `squall standalone` on rootless Podman: sign in, watch an invoked activation appear live, open
it, see tenant markup rendered as text, redrive and delete dead letters, and the pictures of an action.
Screenshots of each step are kept in the test's temporary directory (its path is printed).

The tests share one standalone and one browser, and run as one scenario, in order: the feed's filter test reads
the dead letters test's failed runs, and the sign-out test reads the browser's log since the markup test."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from broker.config import GUEST_KEY
from tests.e2e.test_fire_standalone import record, rule_line, wait_for
from tests.e2e.test_standalone import Standalone, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GUEST_USER, _, GUEST_SECRET = GUEST_KEY.partition(":")
# A cold start of the Python runtime on a shared two-core machine, with room to spare.
RUN_DEADLINE_S = 60.0
UI_DEADLINE_S = 20.0

ECHO = (
    "import sys\ndef main(args):\n    print('echo got', args.get('n'))\n    return {'echo': args.get('n')}\n"
)
MARKUP = (
    "def main(args):\n"
    "    print('<script>window.__xss = 2</script><img src=x onerror=\"window.__xss = 3\">')\n"
    "    return {'html': '<img src=x onerror=\"window.__xss = 1\"><b>bold</b>'}\n"
)
FAILING = "def main(args):\n    raise RuntimeError('always broken')\n"
FIXED = "def main(args):\n    return {'fixed': True, 'n': args.get('n')}\n"

T = TypeVar("T")


class Console:
    """The browser on the console, with the waits and screenshots the tests use."""

    def __init__(self, driver: WebDriver, url: str, shots: Path) -> None:
        self.driver, self.url, self.shots = driver, url, shots

    def until(self, condition: Callable[[WebDriver], T], what: str, deadline_s: float = UI_DEADLINE_S) -> T:
        def probe(driver: WebDriver) -> T | bool:
            try:
                return condition(driver)
            except StaleElementReferenceException:  # the view redrew between find and read
                return False

        waited: T = WebDriverWait(self.driver, deadline_s, poll_frequency=0.1).until(
            probe, f"waiting for {what}"
        )
        return waited

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def visible(self, css: str) -> WebElement:
        return self.until(lambda d: next((e for e in self.all(css) if e.is_displayed()), False), css)

    def click(self, css: str) -> None:
        """Click what `css` finds, again if the view redrew it between the find and the click."""

        def clicked(_: WebDriver) -> bool:
            self.find(css).click()
            return True

        self.until(clicked, f"a click on {css}")

    def go(self, hash_: str) -> None:
        self.driver.execute_script("location.hash = arguments[0]", hash_)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), path
        assert path.stat().st_size > 1000
        return path

    def errors(self) -> list[str]:
        """The browser's error messages since the last call (reading them drains them)."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def session_storage(self) -> dict[str, str]:
        found: dict[str, str] = self.driver.execute_script(
            "return Object.fromEntries(Object.entries(sessionStorage))"
        )
        return found


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    workdir = tmp_path_factory.mktemp("console-standalone")
    running = Standalone(workdir / "data", free_port(), workdir / "standalone.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
    assert running.proc.returncode == 0, running.output()
    # The key travels in headers only: the server's log (access lines included) never shows the secret.
    assert GUEST_SECRET not in running.output().split("Stop with Ctrl-C.", 1)[-1]


@pytest.fixture(scope="module")
def api(standalone: Standalone) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=standalone.url, auth=(GUEST_USER, GUEST_SECRET), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("console-screenshots")
    print(f"console screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def console(standalone: Standalone, shots: Path) -> Iterator[Console]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail("chromium and chromium-driver are missing: run scripts/setup-host.sh (make setup)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The system's chromedriver, matching the system's Chromium: Selenium Manager downloads nothing.
    service = Service(executable_path=driver_path, log_output=str(shots / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get(f"{standalone.url}/console")
        yield Console(driver, standalone.url, shots)
        (shots / "browser-console.json").write_text(json.dumps(driver.get_log("browser"), indent=1))
    finally:
        driver.quit()


def put(api: httpx.Client, path: str, body: dict[str, Any], **query: str) -> None:
    r = api.put(f"/api/v1/namespaces/_/{path}", json=body, params=query)
    assert r.status_code == 200, r.text


def signed_in(console: Console) -> None:
    if console.find("#login").is_displayed():
        console.find("#key").send_keys(GUEST_KEY)
        console.find("#signin").click()
    console.visible("#nav")


# -- sign in, live feed, detail --------------------------------------------------------------------------


def test_sign_in_refuses_a_wrong_key_then_keeps_the_key_in_the_tab_only(console: Console) -> None:
    login = console.visible("#login")
    # Every URL the page asks for is kept, for the sign-out test to check that none carries the key.
    console.driver.execute_script("performance.setResourceTimingBufferSize(100000)")
    console.find("#key").send_keys(f"{GUEST_USER}:not-the-secret")
    console.find("#signin").click()
    console.until(lambda d: "refused" in console.find("#login-error").text, "the refusal")
    assert login.is_displayed() and not console.find("#nav").is_displayed()
    console.shot("01-sign-in-refused")
    console.find("#key").clear()
    signed_in(console)
    assert console.find("#who").text == "namespace guest"
    assert console.session_storage() == {"squall.key": GUEST_KEY}
    assert console.driver.execute_script("return localStorage.length") == 0
    assert console.driver.get_cookies() == []
    assert GUEST_SECRET not in console.driver.current_url
    console.until(
        lambda d: console.find("#live-state").get_attribute("data-state") == "live", "the live feed"
    )
    console.shot("02-signed-in")
    timing = console.driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "const r = performance.getEntriesByType('resource').filter((e) => e.name.includes('/console/'));"
        "return [n.domContentLoadedEventEnd, n.loadEventEnd, r.length, r.reduce((s, e) => s + e.transferSize, 0)];"
    )
    print(
        "console page: DOMContentLoaded {:.0f} ms, load {:.0f} ms, {} assets, {} bytes moved".format(*timing)
    )
    assert timing[2] >= 10  # the style sheet and every module


def test_an_invoked_activation_appears_live_and_opens_with_result_logs_and_timing(
    console: Console, api: httpx.Client
) -> None:
    signed_in(console)
    console.go("#/activations")
    console.until(
        lambda d: console.find("#live-state").get_attribute("data-state") == "live", "the live feed"
    )
    put(api, "actions/echo", {"exec": {"kind": "python:default", "code": ECHO}}, overwrite="true")
    n = uuid.uuid4().hex[:8]
    invoked = time.monotonic()
    r = api.post("/api/v1/namespaces/_/actions/echo", json={"n": n})  # non-blocking: the feed tells the end
    assert r.status_code == 202, r.text
    aid = r.json()["activationId"]
    row = console.until(
        lambda d: next(iter(console.all(f'#feed tr[data-id="{aid}"]')), False),
        f"activation {aid} in the live feed",
        RUN_DEADLINE_S,
    )
    print(f"invoke (cold) to its row in the browser's live feed: {time.monotonic() - invoked:.2f} s")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:4] == ["action", "echo", "success"], cells
    # Warm now: what the feed itself adds to a run.
    invoked = time.monotonic()
    r = api.post("/api/v1/namespaces/_/actions/echo", json={"n": "warm"})
    warm_id = r.json()["activationId"]
    console.until(lambda d: console.all(f'#feed tr[data-id="{warm_id}"]'), "the warm run in the feed")
    print(f"invoke (warm) to its row in the browser's live feed: {time.monotonic() - invoked:.2f} s")
    assert console.all("#throughput svg.throughput rect.ok"), "the throughput chart shows the run"
    console.shot("03-live-feed")

    console.click(f'#feed tr[data-id="{aid}"] td')
    console.until(lambda d: console.find("#detail-id").text == aid, "the activation's detail")
    assert json.loads(console.find("#result").text) == {"echo": n}
    assert f"echo got {n}" in console.find("#logs").text
    facts = console.find("#detail").text
    assert "Duration" in facts and "Wait time" in facts and "Init time" in facts
    assert "nothing caused it" in console.find("#chain").text
    console.shot("04-activation-detail")


def test_tenant_markup_in_results_and_logs_is_shown_as_text(console: Console, api: httpx.Client) -> None:
    signed_in(console)
    put(api, "actions/markup", {"exec": {"kind": "python:default", "code": MARKUP}}, overwrite="true")
    r = api.post("/api/v1/namespaces/_/actions/markup", params={"blocking": "true"}, json={})
    assert r.status_code == 200, r.text
    aid = r.json()["activationId"]
    record(api, aid)  # the logs are in the stored record
    console.go(f"#/activation/{aid}")
    console.until(lambda d: "<script>" in console.find("#logs").text, "the logs as text")
    shown = json.loads(console.find("#result").text)
    assert shown == {"html": '<img src=x onerror="window.__xss = 1"><b>bold</b>'}
    assert console.all("#result img, #result b, #logs img, #logs script, #view script") == []
    assert console.driver.execute_script("return window.__xss === undefined")
    # Nothing the console did so far broke its policy; the refused key's 401 is the one error there may be.
    assert all(" 401 " in message for message in console.errors())
    # The policy is in force, not just sent: markup cannot be assigned as a string on this page at all.
    refused = console.driver.execute_script(
        "try { document.createElement('div').innerHTML = '<b>x</b>'; return 'assigned'; }"
        " catch (e) { return e.name; }"
    )
    assert refused == "TypeError"
    (violation,) = console.errors()
    assert "TrustedHTML" in violation
    console.shot("05-markup-as-text")


def test_the_pure_modules_parse_streams_and_bin_latencies(console: Console) -> None:
    # stream.js and stats.js as the browser runs them, on inputs the live server rarely produces.
    found = console.driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        Promise.all([import('/console/scripts/stream.js'), import('/console/scripts/stats.js')]).then(([st, stats]) => {
          const first = st.parseEvents(': heartbeat\\r\\n\\r\\nid: 7\\r\\nevent: activation\\r\\ndata: {"a":1}\\r\\n\\r\\nid: 8\\nda');
          const second = st.parseEvents(first.rest + 'ta: {"a":2}\\n\\n');
          const bins = stats.latencyHistogram([0.5, 3, 3, 4, 120, 70000]);
          done({
            first: first.events, rest: first.rest, second: second.events,
            q: [stats.quantile([5, 1, 4, 2, 3], 0.5), stats.quantile([5, 1, 4, 2, 3], 0.95), stats.quantile([], 0.5)],
            bins: bins.map((b) => [b.label, b.count]),
            buckets: stats.throughput(
              [{start: 1000, annotations: [{key: 'kind', value: 'python:3.11'}], response: {success: true}},
               {start: 1999, annotations: [{key: 'kind', value: 'python:3.11'}], response: {success: false, status: 'application error'}},
               {start: 1500, annotations: [], response: {success: true}}],
              2000, 2000, 2).map((b) => [b.ok, b.failed]),
          });
        }, (error) => done({error: String(error)}));
        """
    )
    assert "error" not in found, found
    assert found["first"] == [{"id": "7", "event": "activation", "data": '{"a":1}'}]
    assert found["rest"] == "id: 8\nda"
    assert found["second"] == [{"id": "8", "event": "message", "data": '{"a":2}'}]
    assert found["q"] == [3, 5, None]
    counts = dict(found["bins"])
    assert counts["<1ms"] == 1 and counts["<5ms"] == 3 and counts["<200ms"] == 1 and counts["≥60s"] == 1
    assert sum(counts.values()) == 6
    # Trigger records (no `kind`) are not runs; the window's second half holds one success and one failure.
    assert found["buckets"] == [[0, 0], [1, 1]]


# -- dead letters ----------------------------------------------------------------------------------------


def test_dead_letters_are_redriven_and_deleted_from_the_console(console: Console, api: httpx.Client) -> None:
    signed_in(console)
    put(api, "actions/shaky", {"exec": {"kind": "python:default", "code": FAILING}}, overwrite="true")
    put(api, "triggers/shaky-t", {}, overwrite="true")
    put(
        api,
        "rules/shaky-r",
        {"trigger": "shaky-t", "action": "shaky", "retry": {"attempts": 2, "delayMs": 100}},
        overwrite="true",
    )
    runs, fires = [], []
    for n in (1, 2):
        r = api.post("/api/v1/namespaces/_/triggers/shaky-t", json={"n": n})
        assert r.status_code == 202, r.text
        fires.append(r.json()["activationId"])
        runs.append(rule_line(record(api, fires[-1], RUN_DEADLINE_S))["activationId"])

    def both_dead() -> bool:
        listed = {letter["id"] for letter in api.get("/api/v1/namespaces/_/deadletters").json()}
        return set(runs) <= listed

    wait_for(both_dead, RUN_DEADLINE_S, "two dead letters")
    put(api, "actions/shaky", {"exec": {"kind": "python:default", "code": FIXED}}, overwrite="true")

    console.go("#/deadletters")
    redrive_id, delete_id = runs
    row = console.until(lambda d: next(iter(console.all(f'tr[data-id="{redrive_id}"]')), False), "the letter")
    assert "always broken" in row.text and "shaky-r" in row.text
    console.shot("06-dead-letters")

    console.click(f'tr[data-id="{redrive_id}"] button.redrive')
    link = console.until(
        lambda d: next(iter(console.all(f'#notices li[data-id="{redrive_id}"] a.redriven')), False),
        "the redrive's answer",
    )
    redriven = link.text
    run = record(api, redriven, RUN_DEADLINE_S)
    assert run["response"]["status"] == "success" and run["response"]["result"] == {"fixed": True, "n": 1}
    assert api.get(f"/api/v1/namespaces/_/deadletters/{redrive_id}").status_code == 404
    console.until(lambda d: not console.all(f'tr[data-id="{redrive_id}"]'), "the redriven letter to go")
    console.shot("07-redriven")

    remove = f'tr[data-id="{delete_id}"] button.delete'
    console.click(remove)
    console.until(lambda d: console.find(remove).text == "Really delete?", "the delete confirmation")
    assert api.get(f"/api/v1/namespaces/_/deadletters/{delete_id}").status_code == 200  # one click only asks
    console.click(remove)
    console.until(lambda d: not console.all(f'tr[data-id="{delete_id}"]'), "the deleted letter to go")
    assert f"{delete_id} deleted" in console.find("#notices").text
    assert api.get(f"/api/v1/namespaces/_/deadletters/{delete_id}").status_code == 404

    # The redriven run's detail names its cause: the trigger fire.
    console.go(f"#/activation/{redriven}")
    console.until(lambda d: "trigger shaky-t" in console.find("#chain").text, "the cause chain")
    console.shot("08-redriven-run-cause-chain")
    # ... and the fire's record links the rule's run it caused.
    console.click("#chain a")
    console.until(lambda d: console.find("#detail-id").text == fires[0], "the trigger fire's detail")
    assert redrive_id[:12] in console.find("#chain").text


def test_the_feed_filters_by_name_and_status(console: Console) -> None:
    signed_in(console)
    console.go("#/activations")
    name = console.visible("#filters input[name=name]")
    name.clear()
    name.send_keys("shaky")
    Select(console.find("#filters select[name=status]")).select_by_value("failed")
    console.find("#filters button[type=submit]").click()

    def failed_shaky_rows(_: WebDriver) -> list[list[str]] | bool:
        rows = [
            [td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in console.all("#feed tbody tr")
        ]
        # Four failed attempts of the two fires before the fix, replayed from the last quarter hour.
        return rows if len(rows) == 4 else False

    rows = console.until(failed_shaky_rows, "the failed runs of shaky")
    assert all(r[2] == "shaky" and r[3] == "application error" for r in rows), rows
    assert console.find("#live-state").get_attribute("data-state") == "live"
    console.shot("09-feed-filtered")
    Select(console.find("#filters select[name=status]")).select_by_value("")
    name.clear()
    console.find("#filters button[type=submit]").click()


# -- entities, pictures, feeds, invokers -----------------------------------------------------------------


def test_entities_show_success_and_latency_and_an_action_has_its_histogram(
    console: Console, api: httpx.Client
) -> None:
    signed_in(console)
    put(api, "actions/timed", {"exec": {"kind": "python:default", "code": ECHO}}, overwrite="true")
    put(api, "triggers/timed-t", {}, overwrite="true")
    put(api, "rules/timed-r", {"trigger": "timed-t", "action": "timed"}, overwrite="true")
    for n in range(4):
        r = api.post("/api/v1/namespaces/_/actions/timed", params={"blocking": "true"}, json={"n": n})
        assert r.status_code == 200, r.text

    def stored() -> list[dict[str, Any]] | None:
        r = api.get("/api/v1/namespaces/_/activations", params={"name": "timed", "limit": 200})
        found: list[dict[str, Any]] = r.json()
        return found if len(found) >= 4 else None

    # Records are written after the answer.
    listed = wait_for(stored, RUN_DEADLINE_S, "the four runs of timed stored")
    console.go("#/entities")
    row = console.until(
        lambda d: next((tr for tr in console.all("#actions tr") if tr.text.startswith("timed ")), False),
        "the timed action",
    )
    assert "100 % of 4" in row.text, row.text
    rule = console.until(
        lambda d: next(
            (tr for tr in console.all("#rules tbody tr") if tr.text.startswith("timed-r ")), False
        ),
        "the timed rule",
    )
    cells = [td.text for td in rule.find_elements(By.TAG_NAME, "td")]
    assert cells[:5] == ["timed-r", "timed-t", "timed", "active", "100 % of 4"], cells
    assert "timed-t" in console.find("#triggers").text
    console.shot("10-entities")

    console.click('#actions a[href="#/action/timed"]')
    bars = console.until(lambda d: console.all("#latency svg.histogram rect.bar"), "the latency histogram")
    counted = sum(int(bar.get_attribute("data-count") or 0) for bar in bars)
    assert counted == len(listed) == 4 and all("duration" in a for a in listed)
    assert len(console.all("#action-throughput svg.throughput rect.ok")) >= 1
    assert console.all("#action-throughput svg.throughput rect.bad") == []
    console.shot("11-action-latency")


def test_feeds_show_their_next_fire_and_invokers_their_pools(console: Console, api: httpx.Client) -> None:
    signed_in(console)
    put(api, "triggers/yearly", {}, overwrite="true")
    r = api.post(
        "/api/v1/namespaces/whisk.system/actions/alarms/alarm",
        params={"blocking": "true"},
        json={
            "lifecycleEvent": "CREATE",
            "triggerName": "/_/yearly",
            "authKey": GUEST_KEY,
            "cron": "0 0 1 1 *",
        },
    )
    assert r.status_code == 200, r.text
    console.go("#/feeds")
    # The scheduler tells the next fire once it has planned it; the view refreshes itself meanwhile.
    row = console.until(
        lambda d: next(
            (tr for tr in console.all("tr") if "/guest/yearly" in tr.text and "(in " in tr.text), False
        ),
        "the alarm feed with its next fire",
        RUN_DEADLINE_S,
    )
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    status = api.get("/api/v1/namespaces/_/feeds").json()[0]["status"]
    assert cells[3] == "active" and cells[6] == "0" and status["nextFire"] > time.time() * 1000, (
        cells,
        status,
    )
    console.shot("12-feeds")

    console.go("#/invokers")
    row = console.until(
        lambda d: next((tr for tr in console.all("tr") if tr.text.startswith("invoker0/0")), False),
        "an invoker",
    )
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "up" and cells[2].endswith(" MB") and "python" in cells[7].split(", "), cells
    console.shot("13-invokers")


def test_signing_out_forgets_the_key(console: Console) -> None:
    signed_in(console)
    urls: list[str] = console.driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    assert any("/activations/stream?" in url for url in urls) and any("/deadletters" in url for url in urls)
    assert not [url for url in urls if GUEST_SECRET in url or GUEST_USER in url]
    console.find("#logout").click()
    console.visible("#login")
    assert console.session_storage() == {}
    console.driver.refresh()
    console.visible("#login")
    # Since the probe above, the console logged no error at all: no policy violation, no failed request.
    assert console.errors() == []
