"""The `squall` command line: standalone mode, single roles, runtime images and administration."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from broker.config import Settings
from broker.errors import SquallError
from squall.admin_cli import admin_group
from squall.cli_support import configure_logging, console, fail, loop_factory, run_async
from squall.client.commands import add_client_commands
from squall.client.session import global_options


@click.group()
@global_options
def main() -> None:
    """Squall: an OpenWhisk-compatible serverless event platform on NATS JetStream."""


@main.command()
@click.option(
    "--api-port", type=int, default=None, help="API port (default 3233, like OpenWhisk standalone)."
)
@click.option("--host", "api_host", default=None, help="Address the API listens on (default 127.0.0.1).")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="Where state lives (default ~/.squall)."
)
@click.option(
    "--guest-key", default=None, help="Key of the `guest` namespace (default: OpenWhisk's dev key)."
)
@click.option(
    "--api-workers", type=click.IntRange(min=0), default=None, help="API processes (default: one per core)."
)
@click.option(
    "--brokers", type=click.IntRange(min=0), default=None, help="Broker processes (default: one per 2 cores)."
)
@click.option("--invokers", type=click.IntRange(min=0), default=None, help="Invoker processes (default 1).")
@click.option(
    "--feeds", "feeds_workers", type=click.IntRange(min=0), default=None, help="Feeds processes (default 1)."
)
@click.option(
    "--single-process",
    is_flag=True,
    default=None,
    help="Run every role in this one process (for debugging and profiling).",
)
def standalone(
    *,
    api_port: int | None,
    api_host: str | None,
    data_dir: Path | None,
    guest_key: str | None,
    api_workers: int | None,
    brokers: int | None,
    invokers: int | None,
    feeds_workers: int | None,
    single_process: bool | None,
) -> None:
    """Run every role, each in processes of its own (or all in one with --single-process), with embedded NATS
    and MongoDB unless SQUALL_NATS_URL/SQUALL_MONGODB_URI are set."""
    from broker import metrics
    from squall.standalone import run_standalone

    try:
        settings = Settings.from_env(
            api_port=api_port,
            api_host=api_host,
            data_dir=data_dir,
            guest_key=guest_key,
            api_workers=api_workers,
            brokers=brokers,
            invokers=invokers,
            feeds_workers=feeds_workers,
            single_process=single_process or None,
        )
    except SquallError as exc:
        fail(exc)
    if not settings.single_process and settings.metrics and not settings.metrics_dir:
        # Role processes count in one directory, so that any API worker's /metrics shows them all.
        settings = msgspec.structs.replace(settings, metrics_dir=str(settings.data_dir / "metrics"))
    configure_logging(settings.log_level, settings.log_format)
    metrics.configure(settings, fresh=True)  # this process owns the metrics directory
    # The supervisor itself only starts and watches processes: its loop is asyncio's, whose child watcher
    # and `preexec_fn` the embedded servers rely on; with --single-process every role runs on the chosen one.
    loop = loop_factory(settings.event_loop) if settings.single_process else None
    run_async(lambda: run_standalone(settings, console), loop)


@main.command()
@click.argument("role", type=click.Choice(["api", "broker", "invoker", "feeds"]))
@click.option("--nats-url", default=None, help="NATS server URL (or SQUALL_NATS_URL).")
@click.option("--mongodb-uri", default=None, help="MongoDB URI (or SQUALL_MONGODB_URI).")
@click.option("--api-port", type=int, default=None)
@click.option("--host", "api_host", default=None)
def serve(
    role: str, nats_url: str | None, mongodb_uri: str | None, api_port: int | None, api_host: str | None
) -> None:
    """Run one role against the given NATS and MongoDB."""
    from broker import metrics
    from squall.serve import run_role

    try:
        settings = Settings.from_env(
            nats_url=nats_url, mongodb_uri=mongodb_uri, api_port=api_port, api_host=api_host
        )
    except SquallError as exc:
        fail(exc)
    configure_logging(settings.log_level, settings.log_format)
    metrics.configure(settings)
    run_async(lambda: run_role(role, settings, console), loop_factory(settings.event_loop))


@main.group()
def images() -> None:
    """Runtime images, built offline from Debian packages."""


@images.command("ensure")
def images_ensure() -> None:
    """Build the runtime images whose recipe changed or that are missing (as root)."""
    from runtimes.images import ensure_images

    try:
        ensure_images(Settings.from_env())
    except SquallError as exc:
        fail(exc)


@main.group()
def cluster() -> None:
    """A NATS cluster and every role as separate processes, on this machine."""


@cluster.command("up")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Default ~/.squall/cluster.")
@click.option("--nats", "nats_nodes", type=int, default=3, show_default=True, help="nats-server nodes.")
@click.option("--apis", type=int, default=2, show_default=True)
@click.option("--brokers", type=int, default=2, show_default=True)
@click.option("--invokers", type=int, default=2, show_default=True)
@click.option("--feeds", type=int, default=2, show_default=True)
def cluster_up(data_dir: Path | None, nats_nodes: int, **counts: int) -> None:
    """Three clustered nats-servers (JetStream R3) and 2 API + 2 broker + 2 invoker + 2 feeds processes."""
    from squall.cluster import run_cluster

    try:
        settings = Settings.from_env(data_dir=data_dir)
    except SquallError as exc:
        fail(exc)
    if data_dir is None:
        settings = msgspec.structs.replace(settings, data_dir=settings.data_dir / "cluster")
    configure_logging(settings.log_level, settings.log_format)
    run_async(lambda: run_cluster(settings, console, nats_nodes=nats_nodes, **counts))


main.add_command(admin_group, "admin")
add_client_commands(main)
