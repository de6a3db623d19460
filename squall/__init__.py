"""Composition root: the `squall` CLI, standalone mode, process supervision and embedded dev servers."""
