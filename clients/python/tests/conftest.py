"""Fixtures: a nats-server and a worker per test, stopped at its end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import NatsServer, Worker


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def worker(nats_server: NatsServer, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(nats_server, tmp_path, "w1", "--drain-timeout", "5")
    yield w
    w.stop()
