"""Runtime images: their recipes, their content-addressed tags, and building them offline from Debian packages."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from broker.config import Settings
from broker.errors import BadRequest, InternalError, Unavailable

# Bump when the way an image is built changes (trimming, --change options) without the recipe changing, so
# that every host rebuilds instead of reusing an image made the old way.
RECIPE_VERSION = 1

# The environment of the processes run as the engine user is built from known values, not inherited.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETUP_HINT = "rootless Podman is not set up: run `make run` or `sudo scripts/setup-host.sh`"


class ImageRecipe(msgspec.Struct, frozen=True, kw_only=True):
    """What goes into a runtime image: Debian packages on a Debian suite. The interpreter only: Squall's proxy
    is bind-mounted read-only into each container. A launcher that must be compiled before it can run (Java's)
    is baked in: `baked` files of runtimes/proxy/launchers are copied to /opt/squall, then the `setup`
    commands run in the image's root."""

    kind_family: str
    packages: tuple[str, ...]
    suite: str = "bookworm"
    baked: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()


LAUNCHERS_DIR = Path(__file__).resolve().parent / "proxy" / "launchers"
BAKED_DIR = "/opt/squall"
# The loop proxy (runtimes/proxy/loop_proxy.py) is Python, so every loop image carries python3 too.
_LOOP = ("python3",)
_JAVA_SETUP = (
    f"java -m jdk.compiler/com.sun.tools.javac.Main -nowarn -cp /usr/share/java/gson.jar -d {BAKED_DIR}/java "
    f"{BAKED_DIR}/SquallLauncher.java",
)

RECIPES: dict[str, ImageRecipe] = {
    "python": ImageRecipe(kind_family="python", packages=("python3",)),  # python3-minimal lacks asyncio
    "nodejs": ImageRecipe(kind_family="nodejs", packages=("nodejs",)),
    "native": ImageRecipe(kind_family="native", packages=_LOOP),
    "go": ImageRecipe(kind_family="go", packages=(*_LOOP, "golang-go")),
    "java": ImageRecipe(
        kind_family="java",
        packages=(*_LOOP, "openjdk-17-jre-headless", "libgoogle-gson-java"),
        baked=("SquallLauncher.java",),
        setup=_JAVA_SETUP,
    ),
    "ruby": ImageRecipe(kind_family="ruby", packages=(*_LOOP, "ruby")),
    "php": ImageRecipe(kind_family="php", packages=(*_LOOP, "php8.2-cli")),
    # Offline: Rust actions may use only the crates Debian packages (their sources, under
    # /usr/share/cargo/registry); serde_json is the one OpenWhisk's Rust actions need.
    # (debootstrap fails to configure rustc among its base packages: apt installs the toolchain afterwards).
    "rust": ImageRecipe(
        kind_family="rust",
        packages=_LOOP,
        setup=(
            "apt-get install -y -q --no-install-recommends rustc cargo librust-serde-json-dev && apt-get clean",
        ),
    ),
}


def offered_families(settings: Settings) -> tuple[str, ...]:
    """The runtime families of `settings.runtimes` (every known one when empty); BadRequest for unknown ones."""
    wanted = tuple(f.strip() for f in settings.runtimes.split(",") if f.strip())
    if not wanted:
        return tuple(RECIPES)
    unknown = sorted(set(wanted) - RECIPES.keys())
    if unknown:
        raise BadRequest(f"unknown runtime families: {', '.join(unknown)} (known: {', '.join(RECIPES)})")
    return tuple(dict.fromkeys(wanted))


def recipe_digest(recipe: ImageRecipe) -> str:
    """12 hex digits identifying the recipe, the build procedure and the content of the baked files."""
    # The original three fields encode as they always did, so the images of recipes without baked files
    # keep their tags.
    canonical: dict[str, Any] = {
        "kind_family": recipe.kind_family,
        "packages": recipe.packages,
        "suite": recipe.suite,
    }
    if recipe.baked or recipe.setup:
        canonical["baked"] = {name: hashlib.sha256(baked_source(name)).hexdigest() for name in recipe.baked}
        canonical["setup"] = recipe.setup
    encoded = msgspec.json.encode({"recipe": canonical, "recipe_version": RECIPE_VERSION})
    return hashlib.sha256(encoded).hexdigest()[:12]


def baked_source(name: str) -> bytes:
    return (LAUNCHERS_DIR / name).read_bytes()


def image_tag(recipe: ImageRecipe) -> str:
    """The tag an image built from `recipe` carries: it changes exactly when the recipe does."""
    return f"localhost/squall-{recipe.kind_family}:{recipe_digest(recipe)}"


def latest_tag(kind_family: str) -> str:
    return f"localhost/squall-{kind_family}:latest"


# --- the Debian mirror the host already uses -------------------------------------------------------------


class AptSource(msgspec.Struct, frozen=True, kw_only=True):
    uri: str
    suites: tuple[str, ...]


class DebianMirror(msgspec.Struct, frozen=True, kw_only=True):
    uri: str
    suite: str


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Binary (`Types: deb`), enabled entries of a deb822 `.sources` file."""
    sources: list[AptSource] = []
    for paragraph in _deb822_paragraphs(text):
        types = paragraph.get("types", "").split()
        if "deb" not in types or paragraph.get("enabled", "yes").strip().lower() == "no":
            continue
        sources.extend(
            AptSource(uri=uri, suites=tuple(paragraph.get("suites", "").split()))
            for uri in paragraph.get("uris", "").split()
        )
    return sources


def _deb822_paragraphs(text: str) -> list[dict[str, str]]:
    paragraphs: list[dict[str, str]] = [{}]
    key = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if paragraphs[-1]:
                paragraphs.append({})
            continue
        if line[0] in " \t":  # continuation of a multi-line field (e.g. an inline Signed-By key)
            if key:
                paragraphs[-1][key] += "\n" + line.strip()
            continue
        key, _, value = line.partition(":")
        key = key.strip().lower()
        paragraphs[-1][key] = value.strip()
    return [p for p in paragraphs if p]


def parse_one_line_sources(text: str) -> list[AptSource]:
    """`deb [options] URI suite [component...]` lines of a `sources.list` file."""
    sources = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            sources.append(AptSource(uri=words[0], suites=(words[1],)))
    return sources


def pick_debian_mirror(sources: Sequence[AptSource], suite: str | None = None) -> DebianMirror:
    """The main Debian archive among `sources`: not -security/-updates/-backports; one that carries `suite`
    if any does, else one that looks like a Debian archive (`.../debian`), else the first."""
    candidates = [
        (source, [s for s in source.suites if "-" not in s and "/" not in s])
        for source in sources
        if "security" not in source.uri
    ]
    candidates = [(source, main) for source, main in candidates if main]
    if not candidates:
        raise Unavailable("no Debian archive found in the apt sources of this host")
    if suite is not None:
        for source, main in candidates:
            if suite in main:
                return DebianMirror(uri=source.uri, suite=suite)
    debian_like = [c for c in candidates if c[0].uri.rstrip("/").endswith("/debian")]
    source, main = (debian_like or candidates)[0]
    return DebianMirror(uri=source.uri, suite=suite or main[0])


def read_debian_mirror(apt_dir: Path = Path("/etc/apt"), suite: str | None = None) -> DebianMirror:
    """The host's Debian mirror, read from its apt sources in apt's order."""
    sources: list[AptSource] = []
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            sources += parse_one_line_sources(path.read_text(errors="replace"))
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        sources += parse_deb822_sources(path.read_text(errors="replace"))
    return pick_debian_mirror(sources, suite)


# --- the rootless engine's user ----------------------------------------------------------------------------


class PodmanUser(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    uid: int
    gid: int
    home: str

    @property
    def runtime_dir(self) -> str:
        return f"/run/user/{self.uid}"


def resolve_podman_user(name: str) -> PodmanUser:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise Unavailable(f"{SETUP_HINT} (user {name!r} does not exist)") from None
    return PodmanUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)


def user_env(user: PodmanUser) -> dict[str, str]:
    return {
        "PATH": SYSTEM_PATH,
        "HOME": user.home,
        "USER": user.name,
        "LOGNAME": user.name,
        "XDG_RUNTIME_DIR": user.runtime_dir,
        "LANG": "C.UTF-8",
    }


def as_user_kwargs(user: PodmanUser) -> dict[str, Any]:
    """subprocess arguments that run a command as the engine user, from root or from that user itself.
    Supplementary groups are cleared: root's would otherwise leak into the rootless engine."""
    kwargs: dict[str, Any] = {"env": user_env(user), "cwd": "/"}  # root's own cwd may be unreadable to it
    euid = os.geteuid()
    if euid == user.uid:
        return kwargs
    if euid != 0:
        raise Unavailable(
            f"the rootless Podman engine belongs to {user.name!r}: run this as root or as that user"
        )
    return {**kwargs, "user": user.uid, "group": user.gid, "extra_groups": []}


def podman_binary() -> str:
    found = shutil.which("podman", path=SYSTEM_PATH)
    if found is None:
        raise Unavailable(f"{SETUP_HINT} (podman is not installed)")
    return found


def pause_pid(user: PodmanUser) -> int | None:
    """The user's rootless pause process (it holds the engine's user namespace), if it is alive."""
    try:
        pid = int(Path(user.runtime_dir, "libpod/tmp/pause.pid").read_text().strip())
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    # An init that does not reap orphans leaves zombies behind: they are gone for our purpose.
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "Z")
    return None if state == "Z" else pid


def stop_new_pause(user: PodmanUser, before: int | None) -> None:
    """Stop the pause process a short-lived podman use started, so that a check leaves nothing behind."""
    after = pause_pid(user)
    if after is not None and after != before:
        with contextlib.suppress(ProcessLookupError):
            os.kill(after, signal.SIGTERM)


# --- building -------------------------------------------------------------------------------------------------


class ImageResult(msgspec.Struct, frozen=True, kw_only=True):
    kind_family: str
    tag: str
    built: bool
    seconds: float
    size_bytes: int = 0


def _podman(user: PodmanUser, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([podman_binary(), *args], **as_user_kwargs(user), check=False, **kwargs)


def image_exists(user: PodmanUser, tag: str) -> bool:
    return _podman(user, "image", "exists", tag, capture_output=True).returncode == 0


def ensure_images(
    settings: Settings, families: Iterable[str] | None = None, log: Callable[[str], None] = print
) -> list[ImageResult]:
    """Build the runtime images whose recipe has no image yet (in parallel), and point `:latest` at them."""
    user = resolve_podman_user(settings.podman_user)
    lock = threading.Lock()

    def say(line: str) -> None:  # builds run in threads: keep their lines whole
        with lock:
            log(line)

    wanted = offered_families(settings) if families is None else tuple(families)
    unknown = set(wanted) - RECIPES.keys()
    if unknown:
        raise BadRequest(
            f"unknown runtime families: {', '.join(sorted(unknown))} (known: {', '.join(RECIPES)})"
        )
    recipes = [RECIPES[f] for f in wanted]
    pause_before = pause_pid(user)
    try:
        missing = [r for r in recipes if not image_exists(user, image_tag(r))]
        results = [
            ImageResult(kind_family=r.kind_family, tag=image_tag(r), built=False, seconds=0.0)
            for r in recipes
            if r not in missing
        ]
        for result in results:
            _tag_latest(user, result.tag, result.kind_family)
            say(f"images: {result.kind_family}: {result.tag} is up to date")
        if missing:
            if os.geteuid() != 0:
                raise Unavailable(
                    "building runtime images needs root (debootstrap): run `sudo squall images ensure`"
                )
            if shutil.which("debootstrap", path=SYSTEM_PATH) is None:
                raise Unavailable(f"{SETUP_HINT} (debootstrap is not installed)")
            with ThreadPoolExecutor(max_workers=len(missing)) as pool:
                results += pool.map(lambda r: _build(user, r, say), missing)
        return results
    finally:
        stop_new_pause(user, pause_before)


def _build(user: PodmanUser, recipe: ImageRecipe, log: Callable[[str], None]) -> ImageResult:
    family, tag = recipe.kind_family, image_tag(recipe)
    mirror = read_debian_mirror(suite=recipe.suite)
    started = time.monotonic()
    # /var/tmp: on disk (not a size-limited tmpfs) and not mounted noexec, which debootstrap's chroot needs.
    workdir = Path(tempfile.mkdtemp(prefix=f"squall-image-{family}-", dir="/var/tmp"))
    rootfs, build_log = workdir / "rootfs", workdir / "debootstrap.log"
    try:
        log(
            f"images: {family}: debootstrap {recipe.suite} with {','.join(recipe.packages)} from {mirror.uri}"
        )
        with build_log.open("wb") as out:
            done = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}",
                 recipe.suite, str(rootfs), mirror.uri],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={"PATH": SYSTEM_PATH},
                check=False,
            )  # fmt: skip
        if done.returncode != 0:
            tail = build_log.read_text(errors="replace").splitlines()[-15:]
            raise InternalError(f"debootstrap for {family} failed:\n" + "\n".join(tail))
        bootstrapped = time.monotonic()
        log(f"images: {family}: debootstrap done in {bootstrapped - started:.1f} s, importing {tag}")
        _bake(rootfs, recipe)
        _trim(rootfs)
        _import(user, rootfs, tag, recipe)
        _tag_latest(user, tag, family)
        size = _image_size(user, tag)
        log(
            f"images: {family}: imported {tag} in {time.monotonic() - bootstrapped:.1f} s ({size / 1e6:.0f} MB)"
        )
        return ImageResult(
            kind_family=family, tag=tag, built=True, seconds=time.monotonic() - started, size_bytes=size
        )
    finally:
        _remove_tree(workdir)


def _bake(rootfs: Path, recipe: ImageRecipe) -> None:
    """Copy the baked files in and run the setup commands in the image's root (with /proc, which a JVM needs)."""
    if not recipe.baked and not recipe.setup:
        return
    target = rootfs / BAKED_DIR.lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    for name in recipe.baked:
        (target / name).write_bytes(baked_source(name))
    proc = rootfs / "proc"
    proc.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True, env={"PATH": SYSTEM_PATH})
    try:
        for command in recipe.setup:
            done = subprocess.run(
                ["chroot", str(rootfs), "sh", "-c", command],
                capture_output=True, stdin=subprocess.DEVNULL, env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
                check=False,
            )  # fmt: skip
            if done.returncode != 0:
                output = (done.stdout + done.stderr).decode(errors="replace").strip()
                raise InternalError(f"setup of the {recipe.kind_family} image failed: {command}\n{output}")
    finally:
        subprocess.run(["umount", "-l", str(proc)], check=False, env={"PATH": SYSTEM_PATH})
    for path in (target, *target.rglob("*")):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def _trim(rootfs: Path) -> None:
    # Downloaded packages, package lists and documentation are dead weight in an interpreter-only image.
    for sub in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
    ):
        target = rootfs / sub
        if target.is_dir() and not target.is_symlink():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()


def _import(user: PodmanUser, rootfs: Path, tag: str, recipe: ImageRecipe) -> None:
    # tar runs as root (the rootfs is root's); the import runs in the user's engine. Device nodes are left out:
    # the rootless engine cannot create them, and every container gets its own /dev.
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "--exclude=./dev/*", "-c", "."],
        stdout=subprocess.PIPE,
        env={"PATH": SYSTEM_PATH},
    )
    assert tar.stdout is not None
    try:
        done = _podman(
            user, "import", "--change", "ENV=LANG=C.UTF-8", "--change",
            f"LABEL=io.squall.recipe={recipe_digest(recipe)}", "-", tag,
            stdin=tar.stdout, capture_output=True,
        )  # fmt: skip
    finally:
        tar.stdout.close()
        tar_rc = tar.wait()
    if done.returncode != 0 or tar_rc != 0:
        raise InternalError(f"podman import of {tag} failed: {done.stderr.decode(errors='replace').strip()}")


def _tag_latest(user: PodmanUser, tag: str, family: str) -> None:
    done = _podman(user, "tag", tag, latest_tag(family), capture_output=True)
    if done.returncode != 0:
        raise InternalError(f"podman tag {tag} failed: {done.stderr.decode(errors='replace').strip()}")


def _image_size(user: PodmanUser, tag: str) -> int:
    done = _podman(user, "image", "inspect", "--format", "{{.Size}}", tag, capture_output=True)
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0


def _remove_tree(path: Path) -> None:
    """Remove a build directory without ever following a mount out of it: a failed debootstrap may leave
    /proc, /sys or a bind-mounted /dev mounted inside."""
    prefix = str(path.resolve()) + "/"
    mounts = [
        line.split()[1].replace("\\040", " ")
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for mountpoint in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], check=False, env={"PATH": SYSTEM_PATH})
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, env={"PATH": SYSTEM_PATH})
