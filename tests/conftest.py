"""Session fixtures: one real nats-server and one real MongoDB wire server (nx-27017) per test run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.config import Settings
from broker.key_seal import new_secret
from squall.embedded import EmbeddedMongo, EmbeddedNats


@pytest.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedNats]:
    """A nats-server with JetStream on a free port and a temporary store, shared by the whole run."""
    async with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
async def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedMongo]:
    """An nx-27017 server on a free port with its db files in a temporary dir, shared by the whole run."""
    async with EmbeddedMongo(tmp_path_factory.mktemp("mongo")) as server:
        yield server


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: EmbeddedMongo) -> str:
    return mongo_server.uri


@pytest.fixture(scope="session")
def settings(nats_url: str, mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the session's servers, with a temporary data dir and an invocation secret."""
    data_dir: Path = tmp_path_factory.mktemp("squall-data")
    return Settings(
        nats_url=nats_url, mongodb_uri=mongo_uri, data_dir=data_dir, invocation_secret=new_secret()
    )


@pytest.fixture
def mongo_db_name() -> str:
    """A fresh database name per test, so tests sharing the server never see each other's documents."""
    return f"test_{uuid.uuid4().hex[:12]}"
