"""What every `squall` command shares: the console, logging set-up, and errors as one clear line."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from rich.console import Console
from rich.logging import RichHandler

from broker.errors import SquallError
from broker.log_context import json_handler

console = Console(stderr=True, highlight=False)


def configure_logging(level: str, log_format: str = "text", prefix: str = "") -> None:
    """Human-readable lines on the console, or JSON lines on stderr (`SQUALL_LOG_FORMAT=json`); `prefix` names
    the process in a supervisor's shared output ("broker.1 ")."""
    handler = (
        json_handler()
        if log_format == "json"
        else RichHandler(console=console, show_path=False, rich_tracebacks=False)
    )
    logging.basicConfig(level=level.upper(), format=prefix + "%(name)s: %(message)s", handlers=[handler])
    # Client libraries log every request at INFO; that is noise in a server's log.
    for chatty in ("httpx", "httpcore", "nats", "pymongo"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def fail(exc: SquallError) -> NoReturn:
    console.print(f"[bold red]squall:[/] {exc.message}")
    sys.exit(1)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `Settings.event_loop` names: uvloop's where it is installed, else asyncio's (None)."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_async(
    main: Callable[[], Coroutine[Any, Any, None]],
    loop: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> None:
    """Run a coroutine (on the loop `loop` makes, asyncio's by default); Squall's own errors become one clear
    line and exit status 1, never a traceback."""
    try:
        with asyncio.Runner(loop_factory=loop) as runner:
            runner.run(main())
    except SquallError as exc:
        fail(exc)
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("[bold]squall:[/] stopped without waiting for the drain")
        sys.exit(130)
