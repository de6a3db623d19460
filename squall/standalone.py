"""`squall standalone`: every role (as supervised processes, or in one) with embedded NATS and MongoDB by default."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
from rich.console import Console

from api.server import bind
from broker.admin import ensure_namespace
from broker.config import GUEST_KEY, Settings
from broker.entity_store import EntityStore
from broker.errors import Unavailable
from broker.namespaces import NamespaceLimits
from broker.nats_errors import redact
from runtimes.podman_service import PodmanService
from squall import heap, roles, runtime_file
from squall.catalog import install_catalog
from squall.embedded import EmbeddedMongo, EmbeddedNats
from squall.invocation_secret import with_invocation_secret
from squall.runtime_file import RuntimeInfo
from squall.supervisor import Supervisor

log = logging.getLogger("squall.standalone")

# As in OpenWhisk standalone, the development namespace is never the one throttled by a benchmark or a test loop.
# Set on boot where the guest record leaves a limit unset; a value an operator set (`squall admin`) stays.
GUEST_LIMITS = NamespaceLimits(
    invocationsPerMinute=1_000_000, concurrentInvocations=10_000, firesPerMinute=1_000_000
)
# Written in the data dir once the guest namespace has been seeded: later boots leave its keys alone, so a
# `squall admin key rotate guest` (or deleting the namespace) is not undone by the next start.
GUEST_SEEDED_MARKER = "guest-seeded"


def should_seed_guest(first_boot: bool, guest_key: str) -> bool:
    """Whether this boot puts the guest namespace and key in place: on the first boot of a data dir, or
    whenever the operator chose the key (SQUALL_GUEST_KEY / --guest-key), never the well-known one again."""
    return first_boot or guest_key != GUEST_KEY


async def seed_guest(store: EntityStore, settings: Settings) -> bool:
    """Create the guest namespace and key when `should_seed_guest` says so; True when it did."""
    marker = settings.data_dir / GUEST_SEEDED_MARKER
    if not should_seed_guest(not marker.exists(), settings.guest_key):
        return False
    await ensure_namespace(store, settings.guest_namespace, settings.guest_key, limits=GUEST_LIMITS)
    marker.write_text("the guest namespace was created on this data dir's first boot\n")
    return True


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Refuse a second standalone on the same data dir: two embedded servers would share one store."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "standalone.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Unavailable(f"another squall standalone is already using {data_dir}") from None
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


async def run_standalone(settings: Settings, console: Console) -> None:
    """Every role with the embedded servers: in supervised role processes, or in this one with `single_process`."""
    if settings.single_process:
        await run_single_process(settings, console)
    else:
        await run_supervised(settings, console)


async def start_services(stack: contextlib.AsyncExitStack, settings: Settings) -> Settings:
    """The embedded NATS and MongoDB (unless URLs are given) and the Podman service, for the life of `stack`;
    the settings pointing at them."""
    nats_url = settings.nats_url
    if not nats_url:
        nats = await stack.enter_async_context(
            EmbeddedNats(settings.data_dir / "nats", sync_interval=settings.nats_sync, authenticated=True)
        )
        nats_url = nats.url
    mongodb_uri = settings.mongodb_uri
    if not mongodb_uri:
        mongo = await stack.enter_async_context(EmbeddedMongo(settings.data_dir / "mongo"))
        mongodb_uri = mongo.uri
    settings = settings.with_backbone(nats_url, mongodb_uri)
    await stack.enter_async_context(PodmanService(settings))
    return settings


async def run_supervised(settings: Settings, console: Console) -> None:
    """The roles as processes (squall/supervisor.py); this one keeps the embedded servers, the data dir's lock,
    the runtime file and the API's listening socket."""
    started = time.monotonic()
    stop = stop_event()
    with data_dir_lock(settings.data_dir):
        settings = with_invocation_secret(settings)
        # Bound first: a busy port is one clear line before anything starts; port 0 becomes the real one.
        with contextlib.closing(bind(settings.api_host, settings.api_port)) as listener:
            settings = msgspec.structs.replace(settings, api_port=listener.getsockname()[1])
            async with contextlib.AsyncExitStack() as stack:
                settings = await start_services(stack, settings)
                # The role processes get ready while this one seeds the guest and installs the catalog.
                supervisor = await stack.enter_async_context(Supervisor(settings, listener))
                async with roles.Backbone(settings) as backbone:
                    seeded = await seed_guest(backbone.store, settings)
                    await install_catalog(backbone.store, settings)
                await supervisor.start()
                info = RuntimeInfo(
                    pid=os.getpid(),
                    api_url=settings.api_url,
                    nats_url=settings.nats_url,
                    mongodb_uri=settings.mongodb_uri,
                )
                stack.enter_context(runtime_file.published(settings.data_dir, info))
                processes = ", ".join(f"{n} {role}" for role, n in supervisor.counts.items() if n)
                print_banner(
                    console,
                    settings,
                    settings.api_url,
                    time.monotonic() - started,
                    show_key=seeded,
                    processes=processes,
                )
                await stop.wait()
                console.print("[bold]squall:[/] stopping…")
    console.print("[bold]squall:[/] stopped")


async def run_single_process(settings: Settings, console: Console) -> None:
    """Every role in this process's event loop (`--single-process`): one process to debug or profile."""
    started = time.monotonic()
    stop = stop_event()
    with data_dir_lock(settings.data_dir):
        settings = with_invocation_secret(settings)
        async with contextlib.AsyncExitStack() as stack:
            settings = await start_services(stack, settings)
            backbone = await stack.enter_async_context(roles.Backbone(settings))
            seeded = await seed_guest(backbone.store, settings)
            await install_catalog(backbone.store, settings)
            await stack.enter_async_context(roles.broker_role(settings, backbone))
            # The invoker first, so that the API never answers 503 "no invokers" during boot; actions are told
            # the API's address (`__OW_API_HOST`) from the settings.
            await stack.enter_async_context(roles.invoker_role_for(settings, backbone))
            api = await stack.enter_async_context(roles.api_role(settings, backbone))
            await stack.enter_async_context(roles.feeds_role(settings, backbone))
            info = RuntimeInfo(
                pid=os.getpid(), api_url=api.url, nats_url=settings.nats_url, mongodb_uri=settings.mongodb_uri
            )
            stack.enter_context(runtime_file.published(settings.data_dir, info))

            print_banner(
                console,
                settings,
                api.url,
                time.monotonic() - started,
                show_key=seeded,
                processes="all in this one (--single-process)",
            )
            heap.settle()
            await stop.wait()
            console.print("[bold]squall:[/] stopping…")
    console.print("[bold]squall:[/] stopped")


def stop_event() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM; a second signal, a moment later, stops without waiting for the drain."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    first_at: float | None = None

    def on_signal() -> None:
        nonlocal first_at
        # A supervisor often signals the whole process group at once: only a later, deliberate
        # second signal means "don't wait".
        if first_at is not None and time.monotonic() - first_at > 1 and main is not None:
            main.cancel()
        first_at = first_at or time.monotonic()
        event.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return event


def print_banner(
    console: Console,
    settings: Settings,
    api_url: str,
    boot_s: float,
    *,
    show_key: bool = True,
    processes: str = "",
) -> None:
    key = settings.guest_key if show_key else "<the key you were given>"
    lines = [
        f"[bold green]Squall standalone[/] is up in {boot_s:.1f} s: API at [bold]{api_url}/api/v1[/]",
        f"  console:    {api_url}/console (sign in with the key below)",
        f"  data dir:   {settings.data_dir}",
        *([f"  roles:      {processes}"] if processes else []),
        f"  NATS:       {redact(settings.nats_url)}",
        f"  MongoDB:    {settings.mongodb_uri}",
        f"  namespace:  {settings.guest_namespace}",
        f"  key:        {key}"
        + ("" if show_key else " (left as it was: `squall admin key rotate guest` prints a new one)"),
    ]
    if show_key and key == GUEST_KEY:
        lines.append(
            "  [yellow]warning:[/] this is OpenWhisk's well-known development key; set SQUALL_GUEST_KEY "
            "(or --guest-key) before exposing this server beyond this machine."
        )
    lines += [
        "Point a client at it:",
        f"  squall property set --apihost {api_url} --auth {key}",
        f"  wsk property set --apihost {api_url} --auth {key}",
        f"  export __OW_API_HOST={api_url} __OW_API_KEY={key}",
        "Stop with Ctrl-C.",
    ]
    for line in lines:
        # soft_wrap: a key or URL broken across lines cannot be copied.
        console.print(line, soft_wrap=True)
