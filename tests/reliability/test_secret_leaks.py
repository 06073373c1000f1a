"""A key never leaves the host: not in errors, statuses, runs, reprs, the database files or any log line.

Random keys are driven through every host path that raises or logs, against the fal simulator over real HTTP. The
simulator only accepts keys it issued, so the paths that succeed use simulator keys (their secret half is what must
not show) and the paths that fail use random ones. The simulator is also made to echo the key back, as a careless
vendor might, in error bodies, HTML pages and rate-limit answers.
"""

from __future__ import annotations

import json
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from structlog.testing import capture_logs

from connector_sdk import hookimpl, logs
from connector_sdk.crypto import CredentialCipher
from connector_sdk.errors import ConnectorHostError
from connector_sdk.host import Host
from connector_sdk.models import ListedKey, RunOutcome
from connector_sdk.sync import sync_now
from connectors.fal.connector import FalConnector
from connectors.fal.simulator import FalSimulator, Fault
from tests.conftest import fal_plugins

pytestmark = pytest.mark.reliability

TEAM = "leak-team"
# Printable, non-space characters an HTTP header can carry (latin-1). A key id has no colon: the first colon is
# where fal's KEY_ID:KEY_SECRET splits, so a colon in the id would move part of the id into the secret.
PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_categories=("Cc", "Zs", "Zl", "Zp"))
KEY_IDS = st.text(PRINTABLE.filter(lambda c: c != ":"), min_size=8, max_size=40)
SECRETS = st.text(PRINTABLE, min_size=8, max_size=40)


ROOT = Path(__file__).resolve().parents[2]
OUR_TEXT = "\n".join(
    path.read_text(encoding="utf-8")
    for folder in ("connector_sdk", "connectors", "manifests", "tests")
    for path in sorted((ROOT / folder).rglob("*"))
    if path.suffix in (".py", ".yaml")
)


def could_be_a_key(text: str) -> bool:
    """Not text the host prints anyway, which is no leak when it shows: a run like ``00000000`` that a timestamp
    or amount may hold, or a piece of the project's own text (hypothesis draws strings from the code under test,
    and a "secret" ``authoriz`` is in every fal error message)."""
    return len(set(text)) >= 4 and text not in OUR_TEXT


@pytest.fixture
def production_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], pytest.CaptureFixture[str]]]:
    """Configures structlog as the CLI does off a terminal (JSON lines on stderr, here at debug level) while
    ``capsys`` captures stderr; the defaults are back after the test."""

    def configure() -> pytest.CaptureFixture[str]:
        capsys.readouterr()
        logs.configure_logging(level="debug", json_output=True)  # binds the sys.stderr capsys put in place
        return capsys

    yield configure
    structlog.reset_defaults()


@contextmanager
def logged() -> Iterator[list[dict[str, Any]]]:
    """Capture every event as the code emitted it, and also render it through the production processors to stderr.

    ``capture_logs`` replaces the configured processors while it runs; the one processor given to it runs the
    production chain (context, level, timestamp, tracebacks, redaction, JSON) on a copy and prints the line the way
    the production logger would, then hands the raw event on to be captured.
    """
    production = list(structlog.get_config()["processors"])
    printer = structlog.get_config()["logger_factory"]()

    def also_in_production(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        line: Any = dict(event)
        for processor in production:
            line = processor(logger, method, line)
        printer.msg(line)
        return event

    with capture_logs(processors=[also_in_production]) as raw:
        yield raw


def echo(*texts: str) -> bytes:
    """fal's error envelope, with a message that repeats what it was sent."""
    said = " | ".join(texts)
    return json.dumps({"error": {"type": "authorization_error", "message": f"you sent {said}"}}).encode()


class Attempts:
    """Runs host calls and keeps every error they raise; an error that is not the host's own fails the test."""

    def __init__(self) -> None:
        self.errors: list[ConnectorHostError] = []

    def __call__(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ConnectorHostError as error:
            self.errors.append(error)
            return None

    def texts(self) -> list[str]:
        return [
            text
            for error in self.errors
            for text in (str(error), repr(error), "".join(traceback.format_exception(error)))
        ]


def strings(value: Any) -> Iterator[str]:
    """Every piece of text in a value, unescaped (a repr or JSON would hide a quote or backslash in a key)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, BaseModel):
        yield repr(value)
        yield from strings(value.model_dump())
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from strings(item)
    else:
        yield repr(value)


def home_files(home: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in home.rglob("*") if path.is_file() and path.name != "secret.key"}


@pytest.fixture
def team(sim: FalSimulator) -> str:
    sim.add_account(TEAM, n_keys=1, n_models=2)
    return TEAM


# Each example is a whole host session (about half a second): a failing key is reported as drawn, not shrunk.
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(key_id=KEY_IDS, secret=SECRETS)
def test_no_key_leaves_the_host_through_errors_statuses_runs_reprs_the_database_or_logs(
    sim: FalSimulator,
    team: str,
    production_logs: Callable[[], pytest.CaptureFixture[str]],
    key_id: str,
    secret: str,
) -> None:
    assume(could_be_a_key(secret))
    random_key = f"{key_id}:{secret}"
    admin, api_only, replacement = sim.issue_key(team), sim.issue_key(team, scope="API"), sim.issue_key(team)
    keys = [random_key, admin, api_only, replacement]
    attempt = Attempts()
    captured = production_logs()

    with (
        tempfile.TemporaryDirectory() as directory,
        pytest.MonkeyPatch.context() as patch,
        logged() as raw_events,
    ):
        patch.setattr(logs, "secrets", logs.SecretRegistry())  # this example's host learns its secrets afresh
        home = Path(directory)
        host = Host.open(home, store_url="", plugins=fal_plugins())
        url = sim.base_url

        # A key fal does not know (401), as given and echoed back in every kind of answer.
        sim.clear_faults()
        attempt(lambda: host.connect("fal", "unknown", {"api_key": random_key, "base_url": url}))
        for fault in (
            Fault("/account/billing", status=401, body=echo(random_key, secret, f"Key {random_key}")),
            Fault("/account/billing", status=403, body=echo(random_key, secret)),
            Fault("/account/billing", status=500, body=echo(random_key, secret), times=3),
            Fault("/account/billing", status=429, headers={"Retry-After": "0"}, body=echo(secret), times=3),
            Fault("/account/billing", status=400, body=echo(random_key, secret)),
            Fault("/account/billing", status=200, body=f"<html>{random_key} {secret}</html>".encode()),
            Fault("/account/billing", action="truncate"),
        ):
            sim.clear_faults()
            sim.inject(fault)
            attempt(lambda: host.connect("fal", "echoed", {"api_key": random_key, "base_url": url}))
        sim.clear_faults()
        # Refused before any request: a malformed key, a bad setting beside a good-looking key.
        attempt(lambda: host.connect("fal", "shapeless", {"api_key": secret, "base_url": url}))
        attempt(lambda: host.connect("fal", "bad-days", {"api_key": random_key, "base_url": url, "backfill_days": 0}))
        attempt(lambda: host.connect("fal", "no good name", {"api_key": random_key, "base_url": url}))
        # An API-scope key (403).
        attempt(lambda: host.connect("fal", "api-scope", {"api_key": api_only, "base_url": url}))
        assert host.store.list_connections() == []

        # A connection that works, synced through everything fal can throw at it.
        name = "leaky"
        host.connect("fal", name, {"api_key": admin, "base_url": url, "backfill_days": 1, "lookback_hours": 1})

        class CarelessListener:
            @hookimpl
            def connector_sdk_rows_emitted(self, connection: Any, rows: Any) -> None:
                raise RuntimeError(f"listener bug while holding {admin}")

        host.plugins.manager.register(CarelessListener(), name="careless-listener")
        runs = []
        for fault in (
            Fault("/models/usage", status=429, headers={"Retry-After": "0"}, body=echo(admin), after=1, times=2),
            Fault("/models/usage", status=500, body=echo(admin, admin.split(":")[1]), times=100),
            Fault("/models/usage", action="truncate"),
            Fault("/models/usage", status=200, body=f"<html>{admin}</html>".encode()),
            Fault("/keys", status=404, body=echo(admin)),
        ):
            sim.clear_faults()
            sim.inject(fault)
            runs.append(sync_now(host, name))
        sim.clear_faults()
        host.plugins.manager.unregister(name="careless-listener")

        # A connector that crashes with the key in its exception.
        def crash(self: FalConnector) -> list[ListedKey]:
            raise RuntimeError(f"connector bug while holding {self.config.api_key.get_secret_value()}")

        with pytest.MonkeyPatch.context() as broken:
            broken.setattr(FalConnector, "listed_keys", crash)
            runs.append(sync_now(host, name))
        # A stored credential the host can no longer decrypt (the key file replaced).
        with pytest.MonkeyPatch.context() as replaced:
            replaced.setattr(host, "cipher", CredentialCipher(Fernet.generate_key()))
            runs.append(sync_now(host, name))

        # The key revoked mid-sync (401), then a reconnect with a random key, then with a good one.
        sim.inject(Fault("/models/usage", status=401, body=echo(admin, f"Key {admin}"), times=100))
        runs.append(sync_now(host, name))
        sim.clear_faults()
        attempt(lambda: sync_now(host, name))
        attempt(lambda: host.reconnect(name, {"api_key": random_key}))
        host.reconnect(name, {"api_key": replacement})
        runs.append(sync_now(host, name))

        outcomes = [run.outcome for run in runs]
        assert outcomes[0] == RunOutcome.SUCCEEDED and outcomes[-1] == RunOutcome.SUCCEEDED, outcomes
        assert RunOutcome.GAVE_UP in outcomes and RunOutcome.RECONNECT_REQUIRED in outcomes, outcomes
        assert outcomes.count(RunOutcome.FAILED) >= 4, outcomes

        shown: list[Any] = [
            *attempt.texts(),
            repr(host),
            repr(host.config_for(name)),
            str(host.config_for(name)),
            host.statuses(),
            host.store.list_runs(name, limit=1000),
            host.store.status_history(name),
            list(host.store.iter_rows(name)),
            runs,
        ]
        files_open = home_files(home)
        host.disconnect(name)
        attempt(lambda: host.config_for(name))
        shown += attempt.texts()
        host.close()
        files_closed = home_files(home)

    lines = captured.readouterr().err.splitlines()
    assert any('"event": "sync_crashed"' in line for line in lines), "the production log lines were not captured"
    assert len(raw_events) >= len(lines) > 20
    # JSON escapes quotes, backslashes and non-ASCII characters: the decoded lines are searched too.
    texts = [*lines, *strings([shown, raw_events, [json.loads(line) for line in lines]])]
    stored = [*files_open.values(), *files_closed.values()]
    assert any(b"SQLite format 3" in data for data in stored)

    for key in keys:
        for secret_text in (key, key.partition(":")[2]):
            for text in texts:
                assert secret_text not in text
            for data in stored:
                assert secret_text.encode() not in data


# Finite floats: JSON spells an infinite one "Infinity", text a drawn "secret" may be without any leak.
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
FIELD_NAMES = st.sampled_from(
    ["event", "reason", "problem", "detail", "body", "items", "headers", "Authorization", "token", "api_key", "x"]
)


@settings(max_examples=200, deadline=None)
@given(key_id=KEY_IDS, secret=SECRETS.filter(lambda s: ":" not in s), data=st.data())
def test_the_redactor_cuts_a_known_key_out_of_any_event_at_any_depth(key_id: str, secret: str, data: Any) -> None:
    # A secret with a colon in it is not learned whole: see the xfail test below.
    assume(could_be_a_key(secret))
    key = f"{key_id}:{secret}"
    leaks = st.sampled_from([key, secret, f"Key {key}", f"{secret}{secret}", f'"{key}"'])
    carrying = st.builds(
        lambda before, leak, after: before + leak + after, st.text(max_size=8), leaks, st.text(max_size=8)
    )
    values = st.recursive(
        carrying | SCALARS,
        lambda inner: (
            st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(FIELD_NAMES, inner, max_size=3)
        ),
        max_leaves=12,
    )
    event = data.draw(st.dictionaries(FIELD_NAMES, values, max_size=4))
    event["event"] = data.draw(carrying)
    event["payload"] = data.draw(values.filter(lambda v: any(secret in text for text in strings(v))))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logs, "secrets", logs.SecretRegistry())
        Host._remember({"api_key": key})  # what connect, reconnect and config_for teach the redactor
        out = logs.redact(None, "info", event)
    rendered = structlog.processors.JSONRenderer()(None, "info", dict(out))
    for text in [rendered, *strings(out), *strings(json.loads(rendered))]:
        assert secret not in text and key not in text


def test_a_secret_half_with_a_colon_in_it_is_redacted_too(tmp_path: Path, sim: FalSimulator) -> None:
    with (
        pytest.MonkeyPatch.context() as patch,
        Host.open(tmp_path / "home", store_url="", plugins=fal_plugins()) as host,
    ):
        patch.setattr(logs, "secrets", logs.SecretRegistry())
        with pytest.raises(ConnectorHostError, match="rejected the API key"):
            host.connect("fal", "colon", {"api_key": "key-id:abcd:efgh", "base_url": sim.base_url})
        out = logs.redact(None, "info", {"event": "http_retry", "problem": "fal echoed abcd:efgh"})
    assert "abcd:efgh" not in repr(out)
