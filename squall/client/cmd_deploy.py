"""`squall deploy` / `squall undeploy`: a wskdeploy manifest put in place, or taken away, entity by entity."""

from __future__ import annotations

import os
from pathlib import Path

import click

from squall.client.api_client import ClientError
from squall.client.feed_calls import call_feed
from squall.client.manifest import Entity, Plan, parse_manifest
from squall.client.names import parse_name, qualify
from squall.client.session import Session, client_command

_root = click.Group()


def load_plan(manifest: Path) -> Plan:
    try:
        text = manifest.read_text()
    except OSError as exc:
        raise ClientError(f"Cannot read the manifest {manifest}: {exc.strerror}") from None
    # `$VAR` in a manifest means the deploying user's environment, as in wskdeploy.
    return parse_manifest(text, manifest.parent, os.environ)


def manifest_argument(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "-m",
        "--manifest",
        "manifest_opt",
        type=click.Path(path_type=Path, dir_okay=False),
        help="The manifest (as wskdeploy's -m).",
    )(f)
    return click.argument("manifest", required=False, type=click.Path(path_type=Path, dir_okay=False))(f)


def chosen(manifest: Path | None, manifest_opt: Path | None) -> Path:
    found = manifest or manifest_opt
    if found is None:
        for default in ("manifest.yaml", "manifest.yml"):
            if Path(default).exists():
                return Path(default)
        raise ClientError("Give a manifest: squall deploy manifest.yaml")
    return found


def deploy_entity(session: Session, entity: Entity) -> None:
    qname = parse_name(entity.name, session.namespace)
    body = dict(entity.body)
    if entity.collection == "rules":
        body = {
            "trigger": qualify(body["trigger"], session.namespace),
            "action": qualify(body["action"], session.namespace),
        }
    if entity.collection == "actions" and body["exec"].get("kind") == "sequence":
        body["exec"] = body["exec"] | {
            "components": [qualify(c, session.namespace) for c in body["exec"]["components"]]
        }
    if entity.feed:
        feed = qualify(entity.feed, session.namespace)
        undeploy_entity(session, entity, quiet=True)  # a feed is re-created with its new inputs
        session.api.put(qname.path("triggers"), body)
        try:
            call_feed(session, feed, "CREATE", qname, entity.feed_params)
        except ClientError as exc:
            session.api.delete(qname.path("triggers"))
            raise ClientError(f"Unable to deploy trigger '{entity.name}': {exc.message}") from None
    else:
        session.api.put(qname.path(entity.collection), body, overwrite=True)
    session.out.ok(f"deployed {entity.collection[:-1]} {entity.name}")


def undeploy_entity(session: Session, entity: Entity, *, quiet: bool = False) -> None:
    qname = parse_name(entity.name, session.namespace)
    try:
        if entity.collection == "triggers":
            current = session.api.get(qname.path("triggers"))
            feed = next((a["value"] for a in current.get("annotations", []) if a.get("key") == "feed"), None)
            if feed:
                try:
                    call_feed(session, str(feed), "DELETE", qname)
                except ClientError as exc:
                    session.out.warn(exc.message)
        session.api.delete(
            qname.path(entity.collection), force=True if entity.collection == "packages" else None
        )
    except ClientError as exc:
        if exc.status != 404:
            raise
        return
    if not quiet:
        session.out.ok(f"undeployed {entity.collection[:-1]} {entity.name}")


@client_command(_root, "deploy")
@manifest_argument
@click.option("--preview", is_flag=True, help="Show what would be deployed, and deploy nothing.")
def deploy_cmd(session: Session, manifest: Path | None, manifest_opt: Path | None, preview: bool) -> None:
    """Deploy a wskdeploy manifest: packages, actions, sequences, triggers (with feeds) and rules.

    \b
    Examples:
      squall deploy manifest.yaml
      squall deploy -m manifest.yaml --preview
    """
    plan = load_plan(chosen(manifest, manifest_opt))
    if preview:
        show_plan(session, plan)
        return
    with session.out.spinner("deploying"):
        for entity in plan.entities:
            deploy_entity(session, entity)
    if session.out.json_mode:
        session.out.json({"deployed": [f"{e.collection}/{e.name}" for e in plan.entities]})
    else:
        session.out.ok(
            f"deployed {len(plan.entities)} entities{f' of project {plan.project}' if plan.project else ''}"
        )


@client_command(_root, "undeploy")
@manifest_argument
def undeploy_cmd(session: Session, manifest: Path | None, manifest_opt: Path | None) -> None:
    """Undeploy what a manifest deployed: rules, then triggers (and their feeds), actions and packages.

    \b
    Example:
      squall undeploy manifest.yaml
    """
    plan = load_plan(chosen(manifest, manifest_opt))
    for entity in reversed(plan.entities):
        undeploy_entity(session, entity)
    if session.out.json_mode:
        session.out.json({"undeployed": [f"{e.collection}/{e.name}" for e in reversed(plan.entities)]})
    else:
        session.out.ok(f"undeployed {len(plan.entities)} entities")


def show_plan(session: Session, plan: Plan) -> None:
    if session.out.json_mode:
        session.out.json(
            [{"collection": e.collection, "name": e.name, "feed": e.feed} for e in plan.entities]
        )
        return
    rows = [[e.collection[:-1], e.name, e.feed or ""] for e in plan.entities]
    session.out.table(f"project {plan.project or ''}".strip(), ["kind", "name", "feed"], rows)


deploy_command = deploy_cmd
undeploy_command = undeploy_cmd
