"""What handlers ask of the namespace throttles, and the stand-in that throttles nothing when none are set."""

from __future__ import annotations

from typing import Protocol


class Throttling(Protocol):
    """What handlers ask of the throttles (broker.throttles.Throttles); each check counts what it admits."""

    async def check_fire(self, namespace: str) -> None: ...

    async def check_invoke(self, namespace: str, count: int = 1) -> None: ...

    async def check_web(self, namespace: str) -> None: ...


class Unthrottled:
    """Admits everything: an app built without throttles (tests of one route, benchmarks of the API alone)."""

    async def check_fire(self, namespace: str) -> None:
        return None

    async def check_invoke(self, namespace: str, count: int = 1) -> None:
        return None

    async def check_web(self, namespace: str) -> None:
        return None


UNTHROTTLED = Unthrottled()
