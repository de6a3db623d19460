"""The invoker's run slots, handed out in turn across namespaces so that one namespace's backlog delays no other."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable


class FairGate:
    """At most `capacity()` holders at once; waiters are served one namespace after another (round robin), in
    arrival order within a namespace.

    The invoker reads every namespace's queue; what it took waits here for a slot. A namespace with a thousand
    runs waiting gets every other slot at most while another namespace has runs waiting too.
    """

    def __init__(self, capacity: Callable[[], int]) -> None:
        self.capacity = capacity
        self.holders = 0
        self._waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._turns: collections.deque[str] = collections.deque()  # namespaces with waiters, next first

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @contextlib.asynccontextmanager
    async def slot(self, namespace: str) -> AsyncIterator[None]:
        await self.acquire(namespace)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, namespace: str) -> None:
        if not self._turns and self.holders < self.capacity():
            self.holders += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(namespace)
        if queue is None:
            queue = self._waiting[namespace] = collections.deque()
            self._turns.append(namespace)
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot came with the cancellation: pass it on
            else:
                self._forget(namespace, waiter)
            raise

    def release(self) -> None:
        self.holders -= 1
        self._wake()

    def _wake(self) -> None:
        while self._turns and self.holders < self.capacity():
            namespace = self._turns.popleft()
            queue = self._waiting[namespace]
            waiter = queue.popleft()
            if queue:
                self._turns.append(namespace)  # its next waiter comes after every other namespace's
            else:
                del self._waiting[namespace]
            self.holders += 1
            waiter.set_result(None)

    def _forget(self, namespace: str, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(namespace)
        if queue is None or waiter not in queue:
            return
        queue.remove(waiter)
        if not queue:
            del self._waiting[namespace]
            self._turns.remove(namespace)
