"""Start-up: a command imports what it uses. ``--version`` builds nothing, ``status`` of existing connections reads
the store without loading a plugin, HTTP, structlog or Rich's progress bar, whose imports cost more than the command
does, and ``report`` loads the plugins only once for the vendors' names, which the home then keeps beside the
installed plugins they came from (benchmarks/startup.py measures it; these tests pin it without a clock)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import connector_sdk
import connector_sdk.cli
import connector_sdk.host
import connector_sdk.ratelimit
import connector_sdk.stores
from connector_sdk.host import VENDORS_FILE, Host
from connector_sdk.plugins import DISABLED_ENV
from connectors.fal.simulator import FalSimulator
from tests.conftest import FAST_RETRIES, CliRunner
from tests.test_plugins import GOODMOD

# Runs the CLI in this interpreter, then says which of the modules named in argv[1] it imported, and which models of
# connector_sdk.models it built (validated or serialized with).
PROBE = """
import json, sys
from connector_sdk.cli import cli
watched = json.loads(sys.argv.pop(1))
try:
    cli.main(args=sys.argv[1:], prog_name="connector-host", standalone_mode=False)
finally:
    loaded = sorted(m for m in sys.modules if m in watched or m.split(".")[0] in watched)
    print("LOADED " + json.dumps(loaded), file=sys.stderr)
    models = sys.modules.get("connector_sdk.models")
    built = [n for n, c in vars(models).items() if getattr(c, "__pydantic_complete__", False)] if models else []
    print("BUILT " + json.dumps(sorted(built)), file=sys.stderr)
"""

NEVER_FOR_READING = [
    "requests",
    "urllib3",
    "rich.progress",
    "fastapi",
    "msgspec",
    "structlog",
    "pluggy",
    "connectors",
    "connector_sdk.plugins",
    "connector_sdk.http",
    "connector_sdk.sync",
    "connector_sdk.sinks",
    "connector_sdk.focus",
    "connector_sdk.portal",
]


def probe(
    home: Path, *args: str, watched: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    environment.update({"CONNECTOR_HOST_HOME": str(home), **FAST_RETRIES, **(env or {})})
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(watched), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=90,
    )
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    return done, json.loads(line.removeprefix("LOADED "))


def built(probed: subprocess.CompletedProcess[str]) -> list[str]:
    """The models of connector_sdk.models the probed command built."""
    (line,) = [line for line in probed.stderr.splitlines() if line.startswith("BUILT ")]
    return json.loads(line.removeprefix("BUILT "))


def test_version_imports_neither_the_host_nor_any_library_of_a_command(home: Path) -> None:
    watched = [*NEVER_FOR_READING, "cryptography", "pydantic", "rich", "sqlite3", "connector_sdk.host"]
    done, loaded = probe(home, "--version", watched=[*watched, "importlib.metadata"])
    assert done.stdout == f"connector-host, version {connector_sdk.__version__}\n", done.stderr
    assert loaded == []


def test_the_version_the_package_says_is_the_version_installed() -> None:
    # The build reads connector_sdk.__version__ (pyproject.toml): --version prints it without reading the metadata.
    assert importlib.metadata.version("connector-host") == connector_sdk.__version__


def test_status_and_report_on_an_empty_store_load_no_plugin(home: Path) -> None:
    Host.open(home).close()
    for command in (("status", "--format", "json"), ("report",)):
        done, loaded = probe(home, *command, watched=NEVER_FOR_READING)
        assert done.returncode == 0, done.stderr
        assert loaded == [], command


def test_status_of_an_empty_store_names_the_installed_connectors(home: Path) -> None:
    """The one reading command that loads the plugins without a connection: its hint lists what can be connected."""
    Host.open(home).close()
    done, loaded = probe(home, "status", watched=["connectors", "rich.progress", "fastapi"])
    assert done.returncode == 0, done.stderr
    assert "fal" in done.stdout and "openai" in done.stdout
    assert [m for m in loaded if not m.startswith("connectors")] == []


def test_status_of_a_synced_connection_loads_no_plugin(
    cli: CliRunner, home: Path, sim: FalSimulator, admin_key: str
) -> None:
    connect = ("connect", "fal", "--name", "prod", "--base-url", sim.base_url, "--backfill-days", "1")
    assert cli(*connect, env={"FAL_KEY": admin_key}).returncode == 0
    assert cli("sync", "prod").returncode == 0

    done, loaded = probe(home, "status", "--format", "json", watched=NEVER_FOR_READING)
    assert done.returncode == 0, done.stderr
    (status,) = json.loads(done.stdout)
    assert status["name"] == "prod" and status["rows"] > 0
    assert "usage page size" in status["facts"], "what the connector learned is shown without its plugin"
    assert loaded == []


# What reading the store and printing its table needs none of: the key is checked without cryptography, the
# records come back from the store without a validator (so pydantic's plugin registry, importlib.metadata, is never
# read), and nothing logs.
NOT_FOR_A_TABLE = [*NEVER_FOR_READING, "cryptography", "pydantic.plugin._loader", "importlib.metadata", "logging"]


def test_status_and_report_of_synced_connections_build_no_model_and_import_no_cryptography(
    cli: CliRunner, home: Path, sim: FalSimulator, admin_key: str
) -> None:
    connect = ("connect", "fal", "--name", "prod", "--base-url", sim.base_url, "--backfill-days", "1")
    assert cli(*connect, env={"FAL_KEY": admin_key}).returncode == 0
    assert cli(*connect[:3], "prod-2", *connect[4:], env={"FAL_KEY": admin_key}).returncode == 0  # one account twice
    assert cli("sync", "--all").returncode == 0
    assert cli("report").returncode == 0  # keeps the vendors' names

    for command in (("status",), ("status", "prod"), ("report",), ("report", "prod")):
        done, loaded = probe(home, *command, watched=NOT_FOR_A_TABLE)
        assert done.returncode == 0, done.stderr
        assert "prod" in done.stdout or "fal.ai" in done.stdout, command
        assert loaded == [], command
        assert built(done) == [], command


def test_json_output_imports_no_rich(cli: CliRunner, home: Path, sim: FalSimulator, admin_key: str) -> None:
    connect = ("connect", "fal", "--name", "prod", "--base-url", sim.base_url, "--backfill-days", "1")
    assert cli(*connect, env={"FAL_KEY": admin_key}).returncode == 0
    assert cli("sync", "prod").returncode == 0
    assert cli("report").returncode == 0

    for command in (("status", "--format", "json"), ("report", "--format", "json")):
        done, loaded = probe(home, *command, watched=[*NEVER_FOR_READING, "rich", "cryptography"])
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)
        assert loaded == [], command

    # An error is still said through Rich, in red on a terminal.
    done, loaded = probe(home, "status", "nope", watched=["rich"])
    assert done.returncode == 2
    assert "error: there is no connection named 'nope'" in done.stderr
    assert "rich.console" in loaded


def vendors_of(report: subprocess.CompletedProcess[str]) -> set[str]:
    assert report.returncode == 0, report.stderr
    return {line["vendor"] for line in json.loads(report.stdout)["lines"]}


def test_report_loads_the_plugins_for_the_vendors_names_once_then_reads_them_from_the_home(
    cli: CliRunner, home: Path, sim: FalSimulator, admin_key: str
) -> None:
    connect = ("connect", "fal", "--name", "prod", "--base-url", sim.base_url, "--backfill-days", "1")
    assert cli(*connect, env={"FAL_KEY": admin_key}).returncode == 0
    assert cli("sync", "prod").returncode == 0
    assert not (home / VENDORS_FILE).exists()  # connect and sync need no vendor's name

    # The first report names each vendor from its connector's manifest: the plugins load, HTTP's users do not run.
    done, loaded = probe(home, "report", "--format", "json", watched=["connectors", "rich.progress", "fastapi"])
    assert vendors_of(done) == {"fal.ai"}
    assert "connectors.fal" in loaded and "rich.progress" not in loaded and "fastapi" not in loaded
    assert json.loads((home / VENDORS_FILE).read_text())["vendors"]["fal"] == "fal.ai"

    # The next ones read the names kept in the home: no plugin, no connector, no HTTP.
    done, loaded = probe(home, "report", "--format", "json", watched=NEVER_FOR_READING)
    assert vendors_of(done) == {"fal.ai"}
    assert loaded == []


def test_the_vendors_names_kept_in_the_home_follow_the_installed_plugins(
    cli: CliRunner, home: Path, sim: FalSimulator, admin_key: str
) -> None:
    connect = ("connect", "fal", "--name", "prod", "--base-url", sim.base_url, "--backfill-days", "1")
    assert cli(*connect, env={"FAL_KEY": admin_key}).returncode == 0
    assert cli("sync", "prod").returncode == 0
    assert vendors_of(cli("report", "--format", "json")) == {"fal.ai"}

    # Other plugins here (fal disabled): the names kept no longer apply; the connector's id stands for its vendor.
    disabled = {DISABLED_ENV: "fal"}
    done, loaded = probe(home, "report", "--format", "json", watched=["connectors"], env=disabled)
    assert vendors_of(done) == {"fal"}
    assert "connectors.openai" in loaded
    assert "fal" not in json.loads((home / VENDORS_FILE).read_text())["vendors"]

    # Back to every plugin: loaded again once, and kept again.
    done, loaded = probe(home, "report", "--format", "json", watched=["connectors"])
    assert vendors_of(done) == {"fal.ai"} and "connectors.fal" in loaded
    done, loaded = probe(home, "report", "--format", "json", watched=["connectors"])
    assert vendors_of(done) == {"fal.ai"} and loaded == []

    # Names kept by another version in another shape, or a damaged file, are made again from the plugins.
    for damaged in ('{"installed": [], "vendors": {"fal": "stale"}}', "[1, 2]", '{"vendors": 3}', "not json"):
        (home / VENDORS_FILE).write_text(damaged)
        assert vendors_of(cli("report", "--format", "json")) == {"fal.ai"}, damaged
        assert json.loads((home / VENDORS_FILE).read_text())["vendors"]["fal"] == "fal.ai"


def test_a_plugin_installed_after_the_names_were_kept_is_named_by_the_next_report(
    cli: CliRunner, home: Path, sim: FalSimulator, admin_key: str, tmp_path: Path
) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    on_path = {"PYTHONPATH": str(folder)}
    connect = ("connect", "fal", "--name", "prod", "--base-url", sim.base_url, "--backfill-days", "1")
    assert cli(*connect, env={"FAL_KEY": admin_key}).returncode == 0
    assert cli("sync", "prod").returncode == 0
    assert vendors_of(cli("report", "--format", "json", env=on_path)) == {"fal.ai"}
    assert "fake" not in json.loads((home / VENDORS_FILE).read_text())["vendors"]

    # Installed as pip would: a module and its dist-info with the entry point, in a folder Python imports from.
    (folder / "goodmod.py").write_text(GOODMOD)
    info = folder / "fakeplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[connector_sdk]\ngood = goodmod\n")

    done, loaded = probe(home, "report", "--format", "json", watched=["goodmod"], env=on_path)
    assert vendors_of(done) == {"fal.ai"}
    assert loaded == ["goodmod"]
    assert json.loads((home / VENDORS_FILE).read_text())["vendors"]["fake"] == "Fake"


def test_a_command_that_needs_a_connector_still_loads_the_plugins(home: Path) -> None:
    done, loaded = probe(home, "manifest", "fal", watched=["connectors"])
    assert done.returncode == 0, done.stderr
    assert "connectors.fal" in loaded


@pytest.mark.parametrize("json_output", [True, False], ids=["json", "console"])
def test_logging_configured_before_structlog_is_imported_applies_when_it_is(json_output: bool) -> None:
    """The CLI configures logging before any module has imported structlog; the first line logged must still go
    to stderr, redacted, in the chosen format, at the chosen level."""
    script = f"""
import sys
from connector_sdk import logs
logs.configure_logging(level="info", json_output={json_output})
assert "structlog" not in sys.modules
import structlog
log = structlog.get_logger()
log.debug("too_quiet")
log.info("first_line", api_key="sk-do-not-print", note="hello")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "first_line" in line and "hello" in line and "too_quiet" not in line
    assert "sk-do-not-print" not in line and "[redacted]" in line
    if json_output:
        assert json.loads(line)["event"] == "first_line"


def test_the_host_logs_through_structlog_once_it_logs() -> None:
    from structlog.testing import capture_logs

    with capture_logs() as captured:
        connector_sdk.host.log.info("connection_purged", connection="x")
    assert captured == [{"event": "connection_purged", "connection": "x", "log_level": "info"}]


def test_names_spelled_out_to_spare_imports_match_their_owners() -> None:
    assert connector_sdk.cli.HOME_ENV == connector_sdk.host.HOME_ENV
    assert connector_sdk.cli.STORE_ENV == connector_sdk.stores.STORE_ENV
    assert connector_sdk.host.LIMIT_ENV == connector_sdk.ratelimit.LIMIT_ENV
    assert connector_sdk.host.DISABLED_ENV == DISABLED_ENV
