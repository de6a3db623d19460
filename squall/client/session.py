"""What every client command shares: the global flags (`--apihost`, `-u/--auth`, `-i`, `--json`) on any
command, the configuration they resolve to, the API connection, and errors as one line and an exit status."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import click

from squall.client.api_client import Api, ClientError
from squall.client.config import ClientConfig, default_path, read_props, resolve
from squall.client.output import Output

_META = "squall.client"
P = ParamSpec("P")
R = TypeVar("R")


def _store(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        # The group's flags and the command's share ctx.meta; a flag left unset never erases one given.
        if value not in (None, False):
            ctx.meta.setdefault(_META, {})[name] = value

    return callback


def global_options(f: Callable[P, R]) -> Callable[P, R]:
    """The flags wsk accepts on every command (and on the group: `squall --apihost H action list`)."""
    options = [
        click.option(
            "--apihost",
            envvar="__OW_API_HOST",
            expose_value=False,
            callback=_store("apihost"),
            help="Whisk API host (env __OW_API_HOST).",
        ),
        click.option(
            "-u",
            "--auth",
            envvar="__OW_API_KEY",
            expose_value=False,
            callback=_store("auth"),
            help="Authorization key UUID:KEY (env __OW_API_KEY).",
        ),
        click.option(
            "-i",
            "--insecure",
            is_flag=True,
            expose_value=False,
            callback=_store("insecure"),
            help="Do not verify the server's TLS certificate.",
        ),
        click.option(
            "--json",
            "json_mode",
            is_flag=True,
            expose_value=False,
            callback=_store("json"),
            help="Print JSON only, for scripts.",
        ),
        click.option(
            "--namespace",
            "namespace_flag",
            envvar="__OW_NAMESPACE",
            expose_value=False,
            callback=_store("namespace"),
            hidden=True,
        ),
        click.option(
            "--config-file",
            "config_file_flag",
            envvar="WSK_CONFIG_FILE",
            expose_value=False,
            callback=_store("config_file"),
            hidden=True,
            type=click.Path(path_type=Path),
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@dataclass
class Session:
    config: ClientConfig
    out: Output
    config_path: Path
    _api: Api | None = field(default=None, repr=False)

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self.config)
        return self._api

    @property
    def namespace(self) -> str:
        return self.config.namespace

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def config_path_of(meta: dict[str, Any]) -> Path:
    found = meta.get("config_file")
    return Path(found) if found else default_path(Path.home())


def session_of(ctx: click.Context) -> Session:
    meta: dict[str, Any] = ctx.meta.get(_META, {})
    path = config_path_of(meta)
    config = resolve(
        read_props(path),
        apihost=meta.get("apihost"),
        auth=meta.get("auth"),
        namespace=meta.get("namespace"),
        insecure=bool(meta.get("insecure")),
    )
    return Session(config, Output(json_mode=bool(meta.get("json"))), path)


def failed_to(noun: str | None, verb: str, kw: dict[str, Any]) -> str:
    """wsk's prefix of a server's error: `Unable to get action 'hello'`."""
    target = kw.get("name") or kw.get("activation_id") or kw.get("letter_id")
    what = f"{noun or ''} '{target}'" if target else (noun or "")
    return f"Unable to {verb} {what}".rstrip()


def client_command(
    group: click.Group, name: str, **kwargs: Any
) -> Callable[[Callable[Concatenate[Session, P], None]], click.Command]:
    """A command of `group` that receives a Session; ClientError becomes `error: …` and its exit status."""

    def decorate(f: Callable[Concatenate[Session, P], None]) -> click.Command:
        @functools.wraps(f)
        def run(*args: P.args, **kw: P.kwargs) -> None:
            session = session_of(click.get_current_context())
            try:
                f(session, *args, **kw)
            except ClientError as exc:
                message = exc.message
                if exc.status is not None:
                    message = f"{failed_to(group.name, name, kw)}: {message}"
                session.out.error(message)
                sys.exit(exc.exit_code)
            finally:
                session.close()

        return group.command(name, **kwargs)(global_options(run))

    return decorate
