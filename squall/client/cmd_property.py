"""`squall property set|get|unset`: the `~/.wskprops` file (or `WSK_CONFIG_FILE`), as `wsk property` keeps it."""

from __future__ import annotations

from pathlib import Path

import click
import httpx

from squall.client.config import (
    APIHOST,
    APIVERSION,
    AUTH,
    DEFAULT_APIVERSION,
    NAMESPACE,
    default_path,
    normalize_apihost,
    read_props,
    write_props,
)
from squall.client.output import Output

config_file_option = click.option(
    "--config-file", envvar="WSK_CONFIG_FILE", type=click.Path(path_type=Path), default=None, hidden=True
)


def _path(config_file: Path | None) -> Path:
    return config_file or default_path(Path.home())


@click.group("property")
def property_group() -> None:
    """Work with the client's properties (API host, key, namespace), kept in ~/.wskprops or $WSK_CONFIG_FILE."""


@property_group.command("set")
@click.option("--apihost", help="Whisk API host, e.g. http://127.0.0.1:3233.")
@click.option("-u", "--auth", help="Authorization key UUID:KEY.")
@click.option("--namespace", help="Namespace (default `_`: the key's own).")
@click.option("--apiversion", help="API version (v1).")
@config_file_option
def property_set(
    *,
    apihost: str | None,
    auth: str | None,
    namespace: str | None,
    apiversion: str | None,
    config_file: Path | None,
) -> None:
    """Set one or more properties.

    \b
    Example:
      squall property set --apihost http://127.0.0.1:3233 --auth UUID:KEY
    """
    out = Output()
    if not any((apihost, auth, namespace, apiversion)):
        raise click.UsageError("Give at least one of --apihost, --auth, --namespace, --apiversion.")
    path = _path(config_file)
    props = read_props(path)
    if apihost:
        props[APIHOST] = apihost
    if auth:
        props[AUTH] = auth
    if namespace:
        props[NAMESPACE] = namespace
    if apiversion:
        props[APIVERSION] = apiversion
    write_props(path, props)
    if apihost:
        out.ok(f"whisk API host set to {apihost}")
    if auth:
        out.ok("whisk auth set. Run 'squall property get --auth' to see the new value.")
    if namespace:
        out.ok(f"whisk namespace set to {namespace}")
    if apiversion:
        out.ok(f"whisk API version set to {apiversion}")


@property_group.command("unset")
@click.option("--apihost", is_flag=True, help="Unset the API host.")
@click.option("-u", "--auth", is_flag=True, help="Unset the key.")
@click.option("--namespace", is_flag=True, help="Unset the namespace.")
@click.option("--apiversion", is_flag=True, help="Unset the API version.")
@config_file_option
def property_unset(
    apihost: bool, auth: bool, namespace: bool, apiversion: bool, config_file: Path | None
) -> None:
    """Unset one or more properties.

    \b
    Example:
      squall property unset --auth
    """
    out = Output()
    path = _path(config_file)
    props = read_props(path)
    for chosen, key, label in (
        (apihost, APIHOST, "whisk API host"),
        (auth, AUTH, "whisk auth"),
        (namespace, NAMESPACE, "whisk namespace"),
        (apiversion, APIVERSION, "whisk API version"),
    ):
        if chosen:
            props.pop(key, None)
            out.ok(f"{label} unset")
    write_props(path, props)


@property_group.command("get")
@click.option("--apihost", is_flag=True, help="The API host.")
@click.option("-u", "--auth", is_flag=True, help="The key.")
@click.option("--namespace", is_flag=True, help="The namespace.")
@click.option("--apiversion", is_flag=True, help="The API version.")
@click.option("--apibuild", is_flag=True, help="The API's build, asked of the server.")
@click.option("--all", "show_all", is_flag=True, help="Every property (the default).")
@click.option("-i", "--insecure", is_flag=True, help="Do not verify the server's TLS certificate.")
@config_file_option
def property_get(
    *,
    apihost: bool,
    auth: bool,
    namespace: bool,
    apiversion: bool,
    apibuild: bool,
    show_all: bool,
    insecure: bool,
    config_file: Path | None,
) -> None:
    """Show properties.

    \b
    Example:
      squall property get --apihost
    """
    out = Output()
    props = read_props(_path(config_file))
    every = show_all or not any((apihost, auth, namespace, apiversion, apibuild))
    rows: list[tuple[str, str]] = []
    if every or apihost:
        rows.append(("whisk API host", props.get(APIHOST, "")))
    if every or auth:
        rows.append(("whisk auth", props.get(AUTH, "")))
    if every or namespace:
        rows.append(("whisk namespace", props.get(NAMESPACE, "_")))
    if every or apiversion:
        rows.append(("whisk API version", props.get(APIVERSION, DEFAULT_APIVERSION)))
    if every or apibuild:
        rows.append(("whisk API build", _api_build(props.get(APIHOST), insecure)))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.line(f"{label.ljust(width)}  {value}")


def _api_build(host: str | None, insecure: bool) -> str:
    """`GET /api/v1` (no key needed), as `wsk property get --apibuild` reads it."""
    if not host:
        return "Unknown"
    try:
        info = httpx.get(f"{normalize_apihost(host)}/api/v1", verify=not insecure, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return "Unknown"
    return str(info.get("build", "Unknown")) if isinstance(info, dict) else "Unknown"
