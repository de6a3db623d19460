"""The one wall clock of records and events: epoch milliseconds, as OpenWhisk's records carry them."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
