"""Invoker agent, container pool, Podman backend, in-container proxies and runtime images."""
