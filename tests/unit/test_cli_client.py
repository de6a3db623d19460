"""The client's pure parts: the wskprops file, names, arguments into request bodies, SSE, tail's resume, trace."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from broker.dead_letters import REDRIVE_ATTEMPT
from broker.trigger_events import attempt_activation_id
from squall.client import args
from squall.client.api_client import ClientError, error_message
from squall.client.cmd_activation import strip_line
from squall.client.config import dump_props, normalize_apihost, parse_props, read_props, resolve, write_props
from squall.client.feed_calls import feed_params
from squall.client.names import QualifiedName, parse_name
from squall.client.sse import Event, events
from squall.client.tail import Cursor
from squall.client.trace import build_trace

# -- configuration ------------------------------------------------------------------------------------------


def test_props_parse_as_wsk_reads_them() -> None:
    text = "# comment\nAPIHOST=http://h:3233\n\n AUTH = a:b=c \nNAMESPACE=guest\nnot a pair\n"
    assert parse_props(text) == {"APIHOST": "http://h:3233", "AUTH": "a:b=c", "NAMESPACE": "guest"}
    assert parse_props(dump_props({"APIHOST": "x", "AUTH": ""})) == {"APIHOST": "x"}


def test_props_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / ".wskprops"
    assert read_props(path) == {}
    write_props(path, {"AUTH": "u:k"})
    assert read_props(path) == {"AUTH": "u:k"}
    assert path.stat().st_mode & 0o777 == 0o600


def test_flags_and_environment_win_over_the_file() -> None:
    props = {"APIHOST": "http://file:1", "AUTH": "f:k", "NAMESPACE": "ns"}
    config = resolve(props)
    assert (config.apihost, config.auth, config.namespace) == ("http://file:1", "f:k", "ns")
    assert config.credentials == ("f", "k")
    config = resolve(props, apihost="http://flag:2", auth="g:h", namespace="other", insecure=True)
    assert (config.apihost, config.auth, config.namespace, config.insecure) == (
        "http://flag:2",
        "g:h",
        "other",
        True,
    )
    assert resolve({}).namespace == "_"
    assert resolve({}).apihost is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:3233", "https://127.0.0.1:3233"),
        ("http://127.0.0.1:3233/", "http://127.0.0.1:3233"),
        ("http://h:1/api/v1", "http://h:1"),
    ],
)
def test_an_apihost_without_a_scheme_is_https_as_in_wsk(given: str, expected: str) -> None:
    assert normalize_apihost(given) == expected


def test_error_messages_are_the_servers() -> None:
    assert error_message(404, {"error": "The requested resource does not exist.", "code": "x1"}, "") == (
        "The requested resource does not exist. (code x1)"
    )
    assert error_message(502, {"response": {"result": {"error": "boom"}}}, "") == "boom"
    assert error_message(500, None, "plain") == "plain"


# -- names --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", QualifiedName("_", "hello")),
        ("pkg/hello", QualifiedName("_", "hello", "pkg")),
        ("/guest/hello", QualifiedName("guest", "hello")),
        ("/whisk.system/utils/echo", QualifiedName("whisk.system", "echo", "utils")),
    ],
)
def test_names_as_wsk_parses_them(text: str, expected: QualifiedName) -> None:
    assert parse_name(text) == expected


def test_name_paths_and_full_names() -> None:
    name = parse_name("/whisk.system/utils/my action")
    assert name.full == "/whisk.system/utils/my action"
    assert name.path("actions") == "namespaces/whisk.system/actions/utils/my%20action"
    assert parse_name("t", "guest").full == "/guest/t"


@pytest.mark.parametrize("text", ["", "/", "/ns", "a/b/c", "/a/b/c/d", "a//b"])
def test_bad_names_are_refused(text: str) -> None:
    with pytest.raises(ClientError):
        parse_name(text)


# -- arguments into bodies -----------------------------------------------------------------------------------


def test_params_parse_json_values_else_strings(tmp_path: Path) -> None:
    file = tmp_path / "p.json"
    file.write_text('{"a": 1, "b": "file"}')
    found = args.key_values([("b", "2"), ("c", "hello world"), ("d", '{"x": [1]}')], [str(file)])
    assert found == [
        {"key": "a", "value": 1},
        {"key": "b", "value": 2},
        {"key": "c", "value": "hello world"},
        {"key": "d", "value": {"x": [1]}},
    ]
    assert args.payload([("n", "true")]) == {"n": True}


def test_a_param_file_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "p.json"
    file.write_text("[1]")
    with pytest.raises(ClientError, match="JSON object"):
        args.key_values([], [str(file)])
    with pytest.raises(ClientError, match="does not exist"):
        args.key_values([], [str(tmp_path / "missing.json")])


def zip_with(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "x")
    return buffer.getvalue()


def test_kinds_are_inferred_from_files() -> None:
    assert args.kind_of("a.py", None, b"") == "python:default"
    assert args.kind_of("a.js", None, b"") == "nodejs:default"
    assert args.kind_of("a.js", "nodejs:18", b"") == "nodejs:18"
    assert args.kind_of("a.zip", None, zip_with("__main__.py")) == "python:default"
    assert args.kind_of("a.zip", None, zip_with("package.json", "index.js")) == "nodejs:default"
    with pytest.raises(ClientError, match="--kind"):
        args.kind_of("a.rb", None, b"")
    with pytest.raises(ClientError, match="--kind"):
        args.kind_of("a.zip", None, zip_with("main.go"))


def test_code_exec_sends_text_as_is_and_a_zip_in_base64(tmp_path: Path) -> None:
    source = tmp_path / "hello.py"
    source.write_text("def main(a):\n    return a\n")
    assert args.code_exec(str(source), None, "run") == {
        "kind": "python:default",
        "code": "def main(a):\n    return a\n",
        "binary": False,
        "main": "run",
    }
    archive = tmp_path / "app.zip"
    archive.write_bytes(zip_with("__main__.py"))
    found = args.code_exec(str(archive), None, None)
    assert found["binary"] is True
    assert base64.b64decode(found["code"]) == archive.read_bytes()


def test_web_flags_become_wsks_annotations() -> None:
    assert args.web_annotations("true", None) == {"web-export": True, "raw-http": False, "final": True}
    assert args.web_annotations("raw", None) == {"web-export": True, "raw-http": True, "final": True}
    assert args.web_annotations("no", None) == {"web-export": False, "raw-http": False, "final": False}
    assert args.web_annotations(None, "s3cret") == {"require-whisk-auth": "s3cret"}
    generated = args.web_annotations(None, "true")["require-whisk-auth"]
    assert isinstance(generated, int)
    with pytest.raises(ClientError, match="--web"):
        args.web_annotations("maybe", None)


def test_flags_override_given_annotations_and_limits_keep_only_given_ones() -> None:
    merged = args.merge_annotations(
        [{"key": "web-export", "value": False}, {"key": "x", "value": 1}], {"web-export": True}
    )
    assert merged == [{"key": "web-export", "value": True}, {"key": "x", "value": 1}]
    assert args.limits(1000, None, 5, None) == {"timeout": 1000, "logs": 5}


def test_sequence_components_are_qualified() -> None:
    found = args.sequence_exec("a, pkg/b,/whisk.system/utils/echo", lambda n: parse_name(n, "_").full)
    assert found == {"kind": "sequence", "components": ["/_/a", "/_/pkg/b", "/whisk.system/utils/echo"]}


def test_feed_params_carry_the_lifecycle_over_the_users() -> None:
    found = feed_params("CREATE", parse_name("t"), "u:k", {"cron": "* * * * *", "lifecycleEvent": "x"})
    assert found == {"cron": "* * * * *", "lifecycleEvent": "CREATE", "triggerName": "/_/t", "authKey": "u:k"}


def test_strip_keeps_the_text_of_a_log_line() -> None:
    assert strip_line("2024-01-01T00:00:00.000Z stdout: hello there") == "hello there"
    assert (
        strip_line("2024-01-01T00:00:00.000Z    stderr: oops") == "2024-01-01T00:00:00.000Z    stderr: oops"
    )
    assert strip_line("no stream") == "no stream"


# -- SSE and tail's resume ---------------------------------------------------------------------------------


def test_sse_events_with_ids_comments_and_multiline_data() -> None:
    lines = [": heartbeat", "", "id: 7", "event: activation", 'data: {"a":', "data: 1}", "", "data: x", ""]
    assert list(events(lines)) == [Event("activation", '{"a":\n1}', "7"), Event("message", "x", None)]


def test_tail_resumes_from_the_last_position_or_its_first_connection() -> None:
    cursor = Cursor()
    assert cursor.request({"status": "failed"}) == ({"status": "failed"}, {})
    cursor.since = 1000
    assert cursor.request({}) == ({"since": 1000}, {})
    cursor.take(Event("activation", "{}", "41"))
    assert cursor.request({"kind": "action"}) == ({"kind": "action"}, {"Last-Event-ID": "41"})
    cursor.take(Event("overflow", json.dumps({"lastEventId": "45"}), "45"))
    assert cursor.request({}) == ({}, {"Last-Event-ID": "45"})


# -- trace -------------------------------------------------------------------------------------------------


def record(
    aid: str, name: str, *, kind: str | None = "nodejs:18", status: str = "success", **extra: Any
) -> dict[str, Any]:
    annotations = [{"key": "kind", "value": kind}] if kind else []
    annotations += [{"key": k, "value": v} for k, v in extra.pop("annotations", {}).items()]
    base = {
        "activationId": aid,
        "namespace": "guest",
        "name": name,
        "annotations": annotations,
        "response": {"status": status, "result": {"error": "bad"} if status != "success" else {}},
        "end": 0 if kind is None else 5,
        "logs": [],
    }
    return base | extra


def test_trace_follows_rules_sequences_retries_and_dead_letters() -> None:
    seq_id, failing = "a" * 32, "b" * 32
    retry = attempt_activation_id(failing, 2)
    component = "c" * 32
    trigger = record(
        "t" * 32,
        "orders",
        kind=None,
        logs=[
            json.dumps(
                {
                    "statusCode": 0,
                    "success": True,
                    "activationId": seq_id,
                    "rule": "guest/r1",
                    "action": "guest/seq",
                }
            ),
            json.dumps(
                {
                    "statusCode": 0,
                    "success": True,
                    "activationId": failing,
                    "rule": "guest/r2",
                    "action": "guest/fails",
                }
            ),
            json.dumps(
                {
                    "statusCode": 0,
                    "success": True,
                    "rule": "guest/r3",
                    "action": "guest/x",
                    "skipped": "filter",
                }
            ),
        ],
    )
    records = {
        trigger["activationId"]: trigger,
        seq_id: record(seq_id, "seq", kind="sequence", logs=[component]),
        component: record(component, "step", cause=seq_id),
        failing: record(failing, "fails", status="application error", annotations={"attempt": 1}),
        retry: record(
            retry, "fails", status="application error", annotations={"attempt": 2, "retryOf": failing}
        ),
    }
    letters = {
        failing: {"id": failing, "attempts": 2, "reason": {"status": "application error", "error": "bad"}}
    }
    tree = build_trace(trigger["activationId"], records.get, letters.get)
    assert tree["role"] == "trigger"
    first, second, third = tree["rules"]
    assert first["runs"][0]["kind"] == "sequence"
    assert first["runs"][0]["components"][0]["activationId"] == component
    assert "deadLetter" not in first
    assert [run["attempt"] for run in second["runs"]] == [1, 2]
    assert second["runs"][1]["role"] == "retry"
    assert second["deadLetter"]["attempts"] == 2
    assert third == {"role": "rule", "rule": "guest/r3", "action": "guest/x", "skipped": "filter"}
    # …and once the letter is redriven, the redrive's run shows under the rule.
    redrive = attempt_activation_id(failing, REDRIVE_ATTEMPT)
    records[redrive] = record(redrive, "fails")
    del letters[failing]
    second = build_trace(trigger["activationId"], records.get, letters.get)["rules"][1]
    assert second["redrive"]["status"] == "success"


def test_trace_of_an_unknown_activation_fails() -> None:
    with pytest.raises(ClientError, match="does not exist"):
        build_trace("f" * 32, {}.get, {}.get)
