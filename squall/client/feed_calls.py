"""The feed lifecycle as wsk drives it from the client: a blocking invoke of the feed action with
`lifecycleEvent`, `triggerName` and `authKey`; the trigger carries the feed's name as its `feed` annotation."""

from __future__ import annotations

from typing import Any, Final

from squall.client.api_client import ClientError
from squall.client.names import QualifiedName, parse_name
from squall.client.session import Session

FEED_ANNOTATION: Final = "feed"


def feed_params(
    event: str, trigger: QualifiedName, auth: str | None, params: dict[str, Any]
) -> dict[str, Any]:
    """The feed action's arguments (pure): the user's parameters, then the lifecycle's, which win."""
    return params | {"lifecycleEvent": event, "triggerName": trigger.full, "authKey": auth or ""}


def call_feed(
    session: Session, feed: str, event: str, trigger: QualifiedName, params: dict[str, Any] | None = None
) -> Any:
    """Invoke the feed action for one lifecycle event; its result, or ClientError with the feed's error."""
    action = parse_name(feed, session.namespace)
    body = feed_params(event, trigger, session.config.auth, params or {})
    response = session.api.request(
        "POST", action.path("actions"), params={"blocking": True}, json=body, ok=(502,)
    )
    record: Any = response.json() if response.content else {}
    if response.status_code == 202:
        raise ClientError(
            f"The feed {feed} did not answer the {event} in time (activation {record.get('activationId')})."
        )
    result = (record.get("response") or {}).get("result")
    if response.status_code == 502 or not (record.get("response") or {}).get("success", False):
        error = result.get("error") if isinstance(result, dict) else result
        raise ClientError(f"{event} of feed {feed} failed: {error}")
    return result
