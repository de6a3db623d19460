"""The garbage collector's view of a serving process: what it built to start is set aside for good.

A role's start leaves a large, long-lived heap (imported modules, settings, caches, connections). CPython's
full collections walk all of it, and under load they came every few seconds and took 30-110 ms each while
collecting next to nothing: the tail latency of every request that waited behind one (bench/cores.py with a
`gc.callbacks` probe, 2026-12-07). `gc.freeze()` moves that heap to a generation the collector never scans;
cyclic garbage made afterwards is still collected as before.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect what starting left behind, then keep every survivor out of future collections."""
    gc.collect()
    gc.freeze()
