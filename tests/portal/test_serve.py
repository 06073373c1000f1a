"""`connector-host serve` for real: one process with the portal, the API and the scheduler."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from connectors.fal.simulator import FalSimulator
from tests.conftest import FAST_RETRIES, CliRunner


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not so after {timeout}s")
        time.sleep(0.1)


def test_serve_runs_the_portal_and_the_hourly_scheduler_in_one_process_and_stops_on_sigterm(
    cli: CliRunner, home: Path, sim: FalSimulator, admin_key: str
) -> None:
    connected = cli(
        "connect",
        "fal",
        "--name",
        "prod",
        "--base-url",
        sim.base_url,
        "--backfill-days",
        "1",
        env={"FAL_KEY": admin_key},
    )
    assert connected.returncode == 0, connected.stderr
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    env.update({"CONNECTOR_HOST_HOME": str(home), **FAST_RETRIES})
    server = subprocess.Popen(
        [sys.executable, "-m", "connector_sdk", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            poll(lambda: client.get("/api/v1/health").status_code == 200, 30)
            # Nobody asks for a sync: the scheduler inside `serve` runs the one that is due.
            poll(lambda: client.get("/api/v1/connections/prod").json()["last_success"] is not None, 30)
            home = client.get("/")
            assert home.status_code == 200 and "<h1>Overview</h1>" in home.text, "the home page is the overview"
            assert "prod" in client.get("/connections").text
            assert client.get("/api/openapi.json").json()["info"]["title"] == "connector-host"
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert f"Admin portal on {url}" in err
    assert admin_key.partition(":")[2] not in out + err


def test_serve_reads_its_admin_token_from_a_file_and_wants_it_from_every_client(home: Path, tmp_path: Path) -> None:
    token = "a-token-from-a-file-0123456789abcdef"
    token_file = tmp_path / "admin-token"
    token_file.write_text(token + "\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    env["CONNECTOR_HOST_HOME"] = str(home)
    argv = ["serve", "--port", str(port), "--no-scheduler", "--admin-token-file", str(token_file)]
    server = subprocess.Popen(
        [sys.executable, "-m", "connector_sdk", *argv], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            poll(lambda: client.get("/api/v1/health").status_code == 200, 30)
            assert client.get("/api/v1/connections").status_code == 401
            bearer = {"Authorization": f"Bearer {token}"}
            assert client.get("/api/v1/connections", headers=bearer).status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "sign-in required" in err and token not in err
