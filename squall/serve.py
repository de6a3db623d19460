"""`squall serve <role>`: one role in this process, against NATS and MongoDB given by URL."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable

from rich.console import Console

from broker.config import Settings
from broker.errors import BadRequest
from runtimes.podman_service import PodmanService
from squall import heap, roles
from squall.catalog import install_catalog
from squall.invocation_secret import with_invocation_secret
from squall.standalone import stop_event


async def run_role(
    role: str,
    settings: Settings,
    console: Console,
    *,
    listener: socket.socket | None = None,
    catalog: bool = True,
    on_ready: Callable[[], None] | None = None,
    gate: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Run `role` until SIGINT/SIGTERM. A supervisor (squall/supervisor.py) passes the API's `listener`, leaves
    the catalog to itself (`catalog=False`: it installed it once, before starting any role), lets the role
    serve once it is connected (`gate`: False means stop instead) and is told when it serves (`on_ready`)."""
    if not settings.nats_url or not settings.mongodb_uri:
        raise BadRequest(
            "`squall serve` needs --nats-url and --mongodb-uri (or SQUALL_NATS_URL/SQUALL_MONGODB_URI)"
        )
    # APIs seal callers' keys that invokers open: roles on other hosts need SQUALL_INVOCATION_SECRET set alike.
    settings = with_invocation_secret(settings)
    stop = stop_event()
    async with contextlib.AsyncExitStack() as stack:
        backbone = await stack.enter_async_context(roles.Backbone(settings))
        if gate is not None and not await gate():
            return
        if role == "api":
            api = await stack.enter_async_context(roles.api_role(settings, backbone, listener=listener))
            console.print(f"[bold]squall:[/] api role serving {api.url}/api/v1")
        elif role == "invoker":
            # Actions reach the API (`__OW_API_HOST`) at the address given by --host/--api-port.
            await stack.enter_async_context(PodmanService(settings))
            await stack.enter_async_context(roles.invoker_role_for(settings, backbone))
            console.print("[bold]squall:[/] invoker role running")
        elif role == "feeds":
            # The feeds role serves the catalog's feed actions: it keeps the catalog current as well.
            if catalog:
                await install_catalog(backbone.store, settings)
            await stack.enter_async_context(roles.feeds_role(settings, backbone))
            console.print(
                "[bold]squall:[/] feeds role running (feed lifecycle, alarms, webhooks, NATS feeds)"
            )
        else:
            # The broker role keeps whisk.system current: every replica may run it, the installer converges.
            if catalog:
                await install_catalog(backbone.store, settings)
            await stack.enter_async_context(roles.broker_role(settings, backbone))
            console.print("[bold]squall:[/] broker role running (rule engine, activation recorder)")
        heap.settle()
        if on_ready is not None:
            on_ready()
        await stop.wait()
