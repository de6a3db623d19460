"""`squall admin`: namespaces, their keys and their limits, straight against the entity store in NATS."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import click
import msgspec
from rich.table import Table

from broker import admin
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.errors import BadRequest
from broker.namespaces import NamespaceLimits
from squall import runtime_file
from squall.cli_support import console, run_async


def nats_url_of(settings: Settings) -> str:
    """An explicit URL wins; otherwise the standalone running on the data dir, if any."""
    if settings.nats_url:
        return settings.nats_url
    info = runtime_file.read(settings.data_dir)
    if info is None:
        raise BadRequest(
            f"no NATS to talk to: give --nats-url (or SQUALL_NATS_URL), or start `squall standalone` "
            f"on {settings.data_dir}"
        )
    return info.nats_url


@contextlib.asynccontextmanager
async def entity_store(settings: Settings) -> AsyncIterator[EntityStore]:
    settings = settings.with_backbone(nats_url_of(settings), settings.mongodb_uri)
    async with JetStreamBus(settings, name="squall-admin") as bus:
        await bus.provision()
        yield EntityStore(bus)


def with_store(ctx: click.Context, action: Callable[[EntityStore], Awaitable[None]]) -> None:
    settings: Settings = ctx.obj

    async def main() -> None:
        async with entity_store(settings) as store:
            await action(store)

    run_async(main)


def limits_options(func: Callable[..., None]) -> Callable[..., None]:
    names = (
        "max-dead-letters",
        "max-entities",
        "activation-retention-days",
        "fires-per-minute",
        "concurrent-invocations",
        "invocations-per-minute",
    )
    for name in names:
        func = click.option(f"--{name}", type=click.IntRange(min=0), default=None)(func)
    return func


def limits_from(
    *,
    invocations_per_minute: int | None,
    concurrent_invocations: int | None,
    fires_per_minute: int | None,
    activation_retention_days: int | None = None,
    max_entities: int | None = None,
    max_dead_letters: int | None = None,
) -> NamespaceLimits:
    return NamespaceLimits(
        invocationsPerMinute=invocations_per_minute,
        concurrentInvocations=concurrent_invocations,
        firesPerMinute=fires_per_minute,
        activationRetentionDays=activation_retention_days,
        maxEntities=max_entities,
        maxDeadLetters=max_dead_letters,
    )


@click.group()
@click.option("--nats-url", default=None, help="NATS URL (default: the standalone running on --data-dir).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.pass_context
def admin_group(ctx: click.Context, nats_url: str | None, data_dir: Path | None) -> None:
    """Administer namespaces and keys."""
    ctx.obj = Settings.from_env(nats_url=nats_url, data_dir=data_dir)


@admin_group.group()
def namespace() -> None:
    """Create, list and delete namespaces; show or set their limits."""


@namespace.command("create")
@click.argument("name")
@click.option("--key", default=None, help='Import this "uuid:secret" key instead of generating one.')
@limits_options
@click.pass_context
def namespace_create(ctx: click.Context, /, name: str, key: str | None, **limits: int | None) -> None:
    """Create a namespace and print its key (shown only this once)."""

    async def action(store: EntityStore) -> None:
        plain = await admin.create_namespace(store, name, key=key, limits=limits_from(**limits))
        console.print(f"namespace [bold]{name}[/] created; its key (store it now, it is not shown again):")
        click.echo(plain)

    with_store(ctx, action)


@namespace.command("list")
@click.pass_context
def namespace_list(ctx: click.Context) -> None:
    """List namespaces with their key ids and limit overrides."""

    async def action(store: EntityStore) -> None:
        table = Table("namespace", "keys", "limits")
        for ns in await store.list_namespaces():
            keys = ", ".join(k.uuid for k in await store.keys_of(ns.name))
            overrides = msgspec.json.encode(ns.limits).decode()
            table.add_row(ns.name, keys, overrides)
        console.print(table)

    with_store(ctx, action)


@namespace.command("delete")
@click.argument("name")
@click.pass_context
def namespace_delete(ctx: click.Context, name: str) -> None:
    """Delete a namespace, its keys and its data (entities, feeds, queues, dead letters)."""

    async def action(store: EntityStore) -> None:
        await admin.delete_namespace(store, name)
        console.print(f"namespace [bold]{name}[/] deleted")

    with_store(ctx, action)


@namespace.command("limits")
@click.argument("name")
@limits_options
@click.pass_context
def namespace_limits(ctx: click.Context, /, name: str, **limits: int | None) -> None:
    """Show a namespace's limit overrides, or set those given (0 clears one back to the default)."""

    async def action(store: EntityStore) -> None:
        ns = await store.get_namespace(admin.checked_name(name))
        given = {k: v for k, v in msgspec.structs.asdict(limits_from(**limits)).items() if v is not None}
        if given:
            merged = msgspec.structs.asdict(ns.limits) | {k: (v or None) for k, v in given.items()}
            ns = await store.put_namespace(msgspec.structs.replace(ns, limits=NamespaceLimits(**merged)))
        click.echo(msgspec.json.encode(ns.limits).decode())

    with_store(ctx, action)


@admin_group.group()
def key() -> None:
    """API keys."""


@key.command("rotate")
@click.argument("namespace_name", metavar="NAMESPACE")
@click.pass_context
def key_rotate(ctx: click.Context, namespace_name: str) -> None:
    """Replace a namespace's keys with a new one and print it (shown only this once)."""

    async def action(store: EntityStore) -> None:
        plain = await admin.rotate_key(store, namespace_name)
        console.print(f"new key for [bold]{namespace_name}[/] (the old keys no longer work):")
        click.echo(plain)

    with_store(ctx, action)
