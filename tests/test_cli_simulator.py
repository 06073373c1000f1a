"""``connector-host simulator`` and ``demo`` end to end: the real CLI in subprocesses, the simulator in one of them."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FAST_RETRIES, CliRunner


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """A ``connector-host simulator`` process and what it printed before serving."""

    def __init__(self, proc: subprocess.Popen[str], lines: list[str], port: int) -> None:
        self.proc, self.lines, self.port = proc, lines, port
        self.text = "\n".join(lines)
        self.base_url = re.search(r"serving (\S+)", self.text).group(1)  # type: ignore[union-attr]
        self.key_id = re.search(r"Admin key (\w+) of", self.text).group(1)  # type: ignore[union-attr]
        found = re.search(r"cat '([^']+)'", self.text)
        self.key_file = Path(found.group(1)) if found else None


def start_simulator(home: Path, port: int, *args: str) -> Served:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    environment.update({"CONNECTOR_HOST_HOME": str(home), **FAST_RETRIES})
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector_sdk", "simulator", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("Control plane:"):
            return Served(proc, lines, port)
    proc.wait(timeout=30)
    raise AssertionError(f"the simulator did not start: {lines} {proc.stderr.read() if proc.stderr else ''}")


@pytest.fixture
def served(home: Path) -> Iterator[Served]:
    running = start_simulator(home, free_port())
    yield running
    running.proc.terminate()
    assert running.proc.wait(timeout=30) == 0, "SIGTERM stops it cleanly"


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert words in result.stderr


def states(cli: CliRunner, *home: str) -> dict[str, str]:
    result = cli(*home, "status", "--format", "json")
    assert result.returncode == 0, result.stderr
    return {entry["name"]: entry["state"] for entry in json.loads(result.stdout)}


def test_the_simulator_writes_its_admin_key_to_a_private_file_and_never_prints_it(served: Served, cli: CliRunner):
    assert served.key_file is not None
    assert stat.S_IMODE(served.key_file.stat().st_mode) == 0o600
    key = served.key_file.read_text().strip()
    assert key.startswith(served.key_id + ":")
    assert key.split(":")[1] not in served.text
    assert f"connector-host simulator revoke {served.key_id} --port {served.port}" in served.text

    connected = cli("connect", "fal", "--name", "sim", "--base-url", served.base_url, env={"FAL_KEY": key})
    assert connected.returncode == 0, connected.stderr
    assert cli("sync", "sim").returncode == 0
    assert states(cli) == {"sim": "connected"}


def test_revoking_and_issuing_keys_from_another_process_walks_the_reconnect_flow(served: Served, cli: CliRunner):
    key = served.key_file.read_text().strip()  # type: ignore[union-attr]
    assert cli("connect", "fal", "--name", "sim", "--base-url", served.base_url, env={"FAL_KEY": key}).returncode == 0

    revoked = cli("simulator", "revoke", served.key_id, "--port", str(served.port))
    assert revoked.returncode == 0, revoked.stderr
    assert cli("sync", "sim").returncode == 3
    assert states(cli) == {"sim": "reconnect_required"}

    issued = cli("simulator", "issue", "--port", str(served.port))
    assert issued.returncode == 0, issued.stderr
    new_file = Path(re.search(r"cat '([^']+)'", issued.stdout).group(1))  # type: ignore[union-attr]
    assert stat.S_IMODE(new_file.stat().st_mode) == 0o600
    new_key = new_file.read_text().strip()
    assert new_key.split(":")[1] not in issued.stdout
    assert cli("reconnect", "sim", env={"FAL_KEY": new_key}).returncode == 0
    assert cli("sync", "sim").returncode == 0
    assert states(cli) == {"sim": "connected"}

    listed = cli("simulator", "keys", "--port", str(served.port))
    assert re.search(rf"{served.key_id}\s+ADMIN\s+revoked", listed.stdout)
    assert key.split(":")[1] not in listed.stdout and new_key.split(":")[1] not in listed.stdout


def test_print_key_gives_an_export_line_to_eval(served: Served, cli: CliRunner):
    issued = cli("simulator", "issue", "--port", str(served.port), "--print-key", "--scope", "API")
    assert issued.returncode == 0, issued.stderr
    [line] = [line for line in issued.stdout.splitlines() if line.startswith("export FAL_KEY=")]
    key = line.removeprefix("export FAL_KEY=")
    refused = cli("connect", "fal", "--name", "api", "--base-url", served.base_url, env={"FAL_KEY": key})
    assert refused.returncode != 0 and "Admin" in refused.stderr


def test_a_busy_port_and_out_of_range_flags_are_one_line_not_a_traceback(served: Served, cli: CliRunner):
    assert_one_line(
        cli("simulator", "--port", str(served.port)), 2, f"port {served.port} on 127.0.0.1 is already in use"
    )
    assert_one_line(cli("simulator", "--port", "70000"), 2, "--port must be between 1 and 65535")
    assert_one_line(cli("simulator", "--port", "0"), 2, "--port must be between 1 and 65535")
    assert_one_line(cli("simulator", "--port", str(free_port()), "--keys", "99"), 2, "--keys must be between 0 and 50")
    assert_one_line(cli("simulator", "--port", str(free_port()), "--models", "0"), 2, "--models must be between")
    assert_one_line(cli("simulator", "revoke", "0000", "--port", str(served.port)), 2, "unknown key '0000'")
    assert_one_line(cli("demo", "--port", "70000"), 2, "--port must be between 1 and 65535")


def test_a_key_file_that_cannot_be_written_is_one_line(served: Served, cli: CliRunner, tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = cli("simulator", "issue", "--port", str(served.port), "--key-file", str(blocker / "k.key"))
    assert_one_line(result, 2, "pass --key-file FILE or --print-key")


def test_control_commands_without_a_simulator_say_how_to_start_one(cli: CliRunner):
    port = free_port()
    assert_one_line(
        cli("simulator", "revoke", "abc", "--port", str(port)), 1, f"connector-host simulator --port {port}"
    )


def test_a_port_held_by_another_program_stops_the_demo_with_one_line(cli: CliRunner):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert_one_line(
            cli("demo", "--days", "1", "--port", str(port)), 2, f"port {port} on 127.0.0.1 is already in use"
        )


def test_after_the_demo_its_connection_syncs_against_the_simulator_command(home: Path, cli: CliRunner):
    port = free_port()
    demo = cli("demo", "--days", "1", "--port", str(port))
    assert demo.returncode == 0, demo.stderr
    assert f"start `connector-host simulator --port {port}`" in demo.stdout
    demo_home = ("--home", str(home / "demo"))

    running = start_simulator(home, port)
    try:
        synced = cli(*demo_home, "sync", "fal-demo")
        assert synced.returncode == 0, synced.stderr
        assert cli(*demo_home, "run", "--once").returncode == 0
        # openai-demo's and anthropic-demo's simulators ran only during the demo: they stay disconnected, with rows.
        assert states(cli, *demo_home) == {
            "fal-demo": "connected",
            "openai-demo": "disconnected",
            "anthropic-demo": "disconnected",
        }

        again = cli("demo", "--days", "1", "--port", str(port))
        assert again.returncode == 0, again.stderr
        assert f"already running on port {port}" in again.stdout
        assert states(cli, *demo_home) == {
            "fal-demo": "connected",
            "openai-demo": "disconnected",
            "anthropic-demo": "disconnected",
        }
    finally:
        running.proc.terminate()
        running.proc.wait(timeout=30)
