"""One role process of a supervised standalone: `python -m squall.role_process ROLE NAME [--listen-fd N]`.

Started by squall/supervisor.py only. Its settings come whole from the environment (`Settings.to_env`), secrets
included. Once connected it waits for one line on its stdin, `go` (the end of stdin instead: it stops), then
writes one line, `ready`, to its stdout once its role serves; after that its stdout joins its stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from broker.config import Settings
from broker.errors import SquallError
from squall.cli_support import configure_logging, console, fail, loop_factory, run_async
from squall.roles import ROLES

READY = b"ready\n"
GO = b"go\n"


async def wait_for_go() -> bool:
    """True once the supervisor says `go`; False when it closed our stdin (it is stopping, or gone)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        return await reader.readline() == GO
    finally:
        transport.close()


def announce_ready() -> None:
    """Tell the supervisor the role serves, then send whatever else reaches stdout to stderr: nobody reads the
    pipe after this line, and a full pipe would block the process."""
    os.write(1, READY)
    os.dup2(2, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="squall.role_process")
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("name", help="how the supervisor calls this process in logs, e.g. broker.1")
    parser.add_argument("--listen-fd", type=int, default=None, help="the API's shared listening socket")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SquallError as exc:
        fail(exc)
    configure_logging(settings.log_level, settings.log_format, prefix=f"{args.name} ")
    from broker import metrics

    metrics.configure(settings)  # joins the supervisor's metrics directory: /metrics adds every process up
    listener = None
    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
        listener.setblocking(False)

    from squall.serve import run_role

    run_async(
        lambda: run_role(
            args.role,
            settings,
            console,
            listener=listener,
            catalog=False,
            on_ready=announce_ready,
            gate=wait_for_go,
        ),
        loop_factory(settings.event_loop),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
