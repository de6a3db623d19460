"""Webhook delivery ids already fired, in a KV bucket whose entries expire once no sender would retry any more.

TRIGGERS' duplicate window (two minutes) already makes concurrent repeats of a delivery fire once; senders retry
much later (Stripe for three days, Standard Webhooks senders for a day or more), so a fired delivery is also
marked here and a later repeat is answered with the first fire's activation id (a pure function of the trigger and
the delivery id, broker.trigger_events.fire_id) without firing again.
"""

from __future__ import annotations

import hashlib

import nats.js.errors

from broker import subjects
from broker.bus import JetStreamBus, translate


def delivery_key(namespace: str, trigger: str, delivery_id: str) -> str:
    """A KV key per delivery: a sender's id may hold any character, so it is hashed into one token."""
    digest = hashlib.sha256(delivery_id.encode()).hexdigest()[:40]
    return f"{subjects.entity_key(namespace, trigger)}.{digest}"


class WebhookDeliveries:
    def __init__(self, bus: JetStreamBus) -> None:
        self.bus = bus

    async def seen(self, namespace: str, trigger: str, delivery_id: str) -> bool:
        kv = await self.bus.kv(subjects.WEBHOOK_DELIVERIES_BUCKET)
        try:
            await kv.get(delivery_key(namespace, trigger, delivery_id))
        except nats.js.errors.KeyNotFoundError:
            return False
        except Exception as exc:
            raise translate(exc, "reading a webhook delivery") from None
        return True

    async def remember(self, namespace: str, trigger: str, delivery_id: str) -> None:
        kv = await self.bus.kv(subjects.WEBHOOK_DELIVERIES_BUCKET)
        try:
            await kv.put(delivery_key(namespace, trigger, delivery_id), b"")
        except Exception as exc:
            raise translate(exc, "marking a webhook delivery") from None
