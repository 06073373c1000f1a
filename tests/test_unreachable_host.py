"""Checking a key against a host that does not answer fails at once with "could not reach HOST; nothing was
stored": there is no next sync to retry it, so the retry ladder syncs use is not climbed here."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector_sdk.errors import TransientError, Unreachable
from connector_sdk.host import Host
from connector_sdk.http import ApiClient, RetryPolicy, first_contact
from tests.conftest import CliRunner


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[tuple[int, list[int]]]:
    """A loopback port that accepts connections and never answers; yields the port and a count of accepts."""
    accepted: list[int] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)
            accepted.append(1)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1]), accepted
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def client(port: int, sleeps: list[float], timeout: tuple[float, float] = (10.0, 60.0)) -> ApiClient:
    return ApiClient(
        f"http://127.0.0.1:{port}/v1",
        authorization=lambda: "Key id:secret",
        vendor="fal",
        timeout=timeout,
        retry=RetryPolicy(max_attempts=6, backoff_base=0.5),
        sleep=sleeps.append,
    )


def test_a_refused_connection_during_a_key_check_is_not_retried(closed_port: int) -> None:
    sleeps: list[float] = []
    with first_contact(), pytest.raises(Unreachable) as caught:
        client(closed_port, sleeps).get_json("/account/billing")
    assert str(caught.value) == f"could not reach 127.0.0.1:{closed_port} (connection refused)"
    assert sleeps == [], "no retry ladder while a person waits for the check"


def test_a_silent_host_during_a_key_check_is_asked_once(silent_port: tuple[int, list[int]]) -> None:
    port, accepted = silent_port
    sleeps: list[float] = []
    with first_contact(), pytest.raises(Unreachable, match=f"could not reach 127.0.0.1:{port} \\(no answer within"):
        client(port, sleeps, timeout=(1.0, 0.2)).get_json("/account/billing")
    assert sleeps == [] and len(accepted) == 1


def test_a_sync_keeps_retrying_a_refused_connection(closed_port: int) -> None:
    sleeps: list[float] = []
    with pytest.raises(TransientError) as caught:
        client(closed_port, sleeps).get_json("/models/usage")
    assert not isinstance(caught.value, Unreachable)
    assert len(sleeps) == 5 and "the next sync will try again" in str(caught.value)


def test_connect_to_a_host_that_does_not_answer_stores_nothing(host: Host, closed_port: int, admin_key: str) -> None:
    values = {"api_key": admin_key, "base_url": f"http://127.0.0.1:{closed_port}/v1"}
    with pytest.raises(Unreachable, match=r"; nothing was stored$"):
        host.connect("fal", "nowhere", values)
    assert host.store.list_connections() == []


def test_the_cli_says_it_could_not_reach_the_host_in_one_line(
    cli: CliRunner, home: Path, closed_port: int, admin_key: str
) -> None:
    # The default retry policy: before, this climbed six attempts (about 14 s) and promised a next sync.
    result = cli(
        "connect",
        "fal",
        "--name",
        "nowhere",
        "--base-url",
        f"http://127.0.0.1:{closed_port}/v1",
        env={"FAL_KEY": admin_key, "CONNECTOR_HOST_MAX_ATTEMPTS": "6", "CONNECTOR_HOST_BACKOFF_BASE": "0.5"},
    )
    assert result.returncode == 4
    assert result.stderr.strip().splitlines() == [
        f"error: could not reach 127.0.0.1:{closed_port} (connection refused); nothing was stored"
    ]
    assert json.loads(cli("status", "--format", "json").stdout) == []
