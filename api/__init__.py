"""The OpenWhisk-compatible REST API (Starlette)."""
