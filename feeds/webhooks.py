"""The webhook feed's provider: a CREATE answers the URL to give the sender and the secret it signs with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker import codec
from broker.feed_registry import FeedRegistration
from broker.webhook_signatures import check_scheme, check_secret, new_secret
from broker.webhooks import PROVIDER, WebhookConfig, webhook_path


class WebhookProvider:
    """Feed `webhook`: parameters `secret` (generated when absent) and `scheme` (github, stripe or standard;
    absent: any of them, by the headers a delivery carries). The API role serves the URL (api/routes/webhooks.py).
    """

    name = PROVIDER

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def configure(
        self, params: Mapping[str, Any], previous: Mapping[str, Any] | None, now_ms: int
    ) -> dict[str, Any]:
        """CREATE: a new secret unless one is given. UPDATE: the given `secret` and/or `scheme` replace the
        stored ones (`scheme: null` accepts any again)."""
        before = WebhookConfig(**previous) if previous is not None else None
        scheme = check_scheme(params.get("scheme")) if "scheme" in params or before is None else before.scheme
        if "secret" in params:
            secret = check_secret(params["secret"], scheme)
        elif before is not None:
            secret = check_secret(
                before.secret, scheme
            )  # a scheme changed to `standard` must suit the secret
        else:
            secret = new_secret()
        return dict(codec.to_builtins(WebhookConfig(secret=secret, scheme=scheme)))

    def answer(self, registration: FeedRegistration) -> dict[str, Any]:
        return {
            "url": self.base_url + webhook_path(registration.namespace, registration.trigger),
            "secret": registration.config.get("secret"),
        }
