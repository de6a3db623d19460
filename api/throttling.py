"""Where handlers find the namespace throttles: `throttles_of(request)`, which throttles nothing when none is set."""

from __future__ import annotations

from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import Request


class Throttling(Protocol):
    """What handlers ask of the throttles (broker.throttles.Throttles); each check counts what it admits."""

    async def check_fire(self, namespace: str) -> None: ...

    async def check_invoke(self, namespace: str, count: int = 1) -> None: ...


class Unthrottled:
    """Admits everything: an app built without throttles (tests of one route, benchmarks of the API alone)."""

    async def check_fire(self, namespace: str) -> None:
        return None

    async def check_invoke(self, namespace: str, count: int = 1) -> None:
        return None


UNTHROTTLED = Unthrottled()


def attach_throttles(app: Starlette, throttles: Throttling) -> None:
    """Make `throttles` the ones the routes of `app` apply."""
    app.state.throttles = throttles


def throttles_of(request: Request) -> Throttling:
    throttles: Throttling | None = getattr(request.app.state, "throttles", None)
    return UNTHROTTLED if throttles is None else throttles
