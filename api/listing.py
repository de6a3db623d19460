"""Collection listing parameters (`skip`, `limit`, `count`) with OpenWhisk's defaults and bounds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import msgspec
from starlette.requests import Request

from api.body import query_bool, query_int
from api.routing import Param
from broker.errors import BadRequest

T = TypeVar("T")

DEFAULT_LIMIT = 30
MAX_LIMIT = 200

LIST_PARAMS = (
    Param(name="skip", type="integer", minimum=0, description="Number of entities to skip"),
    Param(
        name="limit",
        type="integer",
        minimum=0,
        maximum=MAX_LIMIT,
        description=f"Number of entities to return (default {DEFAULT_LIMIT}, 0 means {MAX_LIMIT})",
    ),
    Param(name="count", type="boolean", description="Return only the number of entities"),
)


class Page(msgspec.Struct, frozen=True, kw_only=True):
    skip: int = 0
    limit: int = DEFAULT_LIMIT
    count: bool = False

    def slice(self, items: Sequence[T]) -> list[T]:
        return list(items[self.skip : self.skip + self.limit])


def page_of(request: Request) -> Page:
    skip = query_int(request, "skip", 0)
    limit = query_int(request, "limit", DEFAULT_LIMIT)
    assert skip is not None and limit is not None
    if skip < 0:
        raise BadRequest(f"The query parameter 'skip' must be at least 0, not {skip}.")
    if limit == 0:
        limit = MAX_LIMIT  # OpenWhisk: 0 means the maximum
    if not 0 < limit <= MAX_LIMIT:
        raise BadRequest(f"The value '{limit}' is not in the range of 0 to {MAX_LIMIT} for 'limit'.")
    return Page(skip=skip, limit=limit, count=query_bool(request, "count"))
