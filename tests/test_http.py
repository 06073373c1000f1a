"""The read-only API client: retries, timeouts, errors, redirects, URLs, decimals and secrets, over real HTTP."""

from __future__ import annotations

import json
import re
import socket
import string
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from structlog.testing import capture_logs

from connector_sdk import __version__, logs
from connector_sdk.errors import (
    ApiError,
    ConfigError,
    ConnectorHostError,
    CredentialError,
    ResponseError,
    TransientError,
)
from connector_sdk.http import ApiClient, RetryPolicy, default_auth_error, parse_retry_after, validate_base_url
from connectors.fal.connector import ESTIMATE_PATH, fal_auth_error
from connectors.fal.simulator import FalSimulator, Fault
from tests.conftest import TEAM

ROOT = Path(__file__).resolve().parents[1]


def make_client(
    base_url: str,
    key: str = "nokey:nosecret",
    *,
    sleeps: list[float] | None = None,
    attempts: int = 3,
    **kwargs: Any,
) -> ApiClient:
    """A client whose sleeps are recorded instead of slept."""
    recorded = sleeps if sleeps is not None else []
    return ApiClient(
        base_url,
        authorization=lambda: f"Key {key}",
        vendor="fal",
        retry=RetryPolicy(max_attempts=attempts, backoff_base=0.5),
        sleep=recorded.append,
        **kwargs,
    )


# -- a tiny server for what the simulator cannot do ---------------------------------------------------------------


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]) -> None:
        self.respond = respond
        self.received: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _LocalHandler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class _LocalHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        self.server.received.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
        status, headers, body = self.server.respond(self)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


@contextmanager
def local_server(
    respond: Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]],
) -> Iterator[LocalServer]:
    server = LocalServer(respond)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def ok_json(_request: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, b'{"ok": true}'


# -- Retry-After ------------------------------------------------------------------------------------------------

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), (" 2.5 ", 2.5), ("0", 0.0), ("120", 120.0)])
def test_retry_after_in_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90.0
    assert parse_retry_after("Fri, 02 Jan 2026 03:05:05 -0000", NOW) == 60.0


def test_retry_after_in_the_past_means_retry_now() -> None:
    assert parse_retry_after(format_datetime(NOW - timedelta(hours=1), usegmt=True), NOW) == 0.0


@pytest.mark.parametrize("value", ["-5", "-0.5"])
def test_negative_retry_after_means_retry_now(value: str) -> None:
    assert parse_retry_after(value, NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "Wed, 99 Foo 2026", "12 seconds"])
def test_unreadable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


# -- retries against the simulator -------------------------------------------------------------------------------


def test_a_good_request_returns_the_decoded_body(sim: FalSimulator, admin_key: str) -> None:
    client = make_client(sim.base_url, admin_key)
    body = client.get_json("/account/billing", {"expand": "credits"})
    assert body["username"] == TEAM
    assert isinstance(body["credits"]["current_balance"], Decimal)
    assert client.requests_sent == 1
    assert sim.requests[0]["query"] == {"expand": ["credits"]}


def test_a_429_waits_exactly_as_long_as_retry_after_says(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", status=429, headers={"Retry-After": "7"}))
    sleeps: list[float] = []
    body = make_client(sim.base_url, admin_key, sleeps=sleeps).get_json("/account/billing")
    assert body["username"] == TEAM
    assert sleeps == [7.0]
    assert [r["status"] for r in sim.requests] == [429, 200]


def test_a_429_with_an_http_date_waits_until_that_date(sim: FalSimulator, admin_key: str) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    sim.inject(Fault("/account/billing", status=429, headers={"Retry-After": format_datetime(when, usegmt=True)}))
    sleeps: list[float] = []
    make_client(sim.base_url, admin_key, sleeps=sleeps).get_json("/account/billing")
    assert len(sleeps) == 1 and 27.0 < sleeps[0] <= 30.0


def test_an_absurd_retry_after_is_capped(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", status=429, headers={"Retry-After": "86400"}))
    sleeps: list[float] = []
    make_client(sim.base_url, admin_key, sleeps=sleeps).get_json("/account/billing")
    assert sleeps == [RetryPolicy().retry_after_max]


def test_a_503_with_retry_after_is_honoured_too(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", status=503, headers={"Retry-After": "3"}))
    sleeps: list[float] = []
    make_client(sim.base_url, admin_key, sleeps=sleeps).get_json("/account/billing")
    assert sleeps == [3.0]


def test_a_429_without_retry_after_backs_off(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", status=429))
    sleeps: list[float] = []
    make_client(sim.base_url, admin_key, sleeps=sleeps).get_json("/account/billing")
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.5


def test_5xx_is_retried_with_growing_backoff_then_gives_up_naming_the_path_and_status(
    sim: FalSimulator, admin_key: str
) -> None:
    sim.inject(Fault("/account/billing", status=503, times=100))
    sleeps: list[float] = []
    client = make_client(sim.base_url, admin_key, sleeps=sleeps, attempts=4)
    with pytest.raises(TransientError) as raised:
        client.get_json("/account/billing")
    message = str(raised.value)
    assert "/account/billing" in message
    assert "HTTP 503" in message
    assert "4 attempts" in message
    assert len(sim.requests) == 4
    assert len(sleeps) == 3
    for attempt, slept in enumerate(sleeps, start=1):
        ceiling = 0.5 * 2 ** (attempt - 1)
        assert ceiling / 2 <= slept <= ceiling


def test_5xx_followed_by_success_succeeds(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", status=502, times=2))
    sleeps: list[float] = []
    assert make_client(sim.base_url, admin_key, sleeps=sleeps).get_json("/account/billing")["username"] == TEAM
    assert len(sleeps) == 2


def test_the_last_problem_is_the_one_reported(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", status=500))
    sim.inject(Fault("/account/billing", status=429, times=10))
    with pytest.raises(TransientError, match="HTTP 429") as raised:
        make_client(sim.base_url, admin_key).get_json("/account/billing")
    assert "HTTP 500" not in str(raised.value)


def test_a_server_that_never_answers_times_out_is_retried_then_gives_up(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", action="hang", delay=5, times=10))
    sleeps: list[float] = []
    client = make_client(sim.base_url, admin_key, sleeps=sleeps, attempts=2, timeout=(1, 0.5))
    with pytest.raises(TransientError, match=r"no answer within 0\.5 s") as raised:
        client.get_json("/account/billing")
    assert "/account/billing" in str(raised.value)
    assert len(sleeps) == 1
    assert len(sim.requests) == 2


def test_a_hang_then_an_answer_succeeds(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", action="hang", delay=5))
    sleeps: list[float] = []
    client = make_client(sim.base_url, admin_key, sleeps=sleeps, timeout=(1, 0.5))
    assert client.get_json("/account/billing")["username"] == TEAM
    assert len(sleeps) == 1


def test_a_dropped_connection_is_retried(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", action="hang"))
    sleeps: list[float] = []
    assert make_client(sim.base_url, admin_key, sleeps=sleeps).get_json("/account/billing")["username"] == TEAM
    assert len(sleeps) == 1


def test_a_reset_mid_body_is_retried(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", action="reset"))
    sleeps: list[float] = []
    assert make_client(sim.base_url, admin_key, sleeps=sleeps).get_json("/account/billing")["username"] == TEAM
    assert len(sleeps) == 1
    assert len(sim.requests) == 2


def test_resets_on_every_attempt_give_up_as_transient(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", action="reset", times=10))
    with pytest.raises(TransientError, match="connection failed"):
        make_client(sim.base_url, admin_key).get_json("/account/billing")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_transient() -> None:
    sleeps: list[float] = []
    client = make_client(f"http://127.0.0.1:{free_port()}/v1", sleeps=sleeps, attempts=2, timeout=(1, 1))
    with pytest.raises(TransientError, match=r"connection failed \(ConnectionError\)") as raised:
        client.get_json("/keys")
    assert "/keys" in str(raised.value)
    assert len(sleeps) == 1
    assert client.requests_sent == 0


def test_a_truncated_body_is_a_response_error_not_retried(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", action="truncate"))
    sleeps: list[float] = []
    with pytest.raises(ResponseError, match="not valid JSON") as raised:
        make_client(sim.base_url, admin_key, sleeps=sleeps).get_json("/account/billing")
    assert "application/json" in str(raised.value)
    assert sleeps == [] and len(sim.requests) == 1


def test_an_html_error_page_with_status_200_is_a_response_error(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", status=200, body=b"<html>maintenance</html>"))
    with pytest.raises(ResponseError, match=r"24 bytes"):
        make_client(sim.base_url, admin_key).get_json("/account/billing")


# -- errors that retrying will not fix ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth_error", [default_auth_error, fal_auth_error], ids=["default", "fal"])
def test_a_401_is_an_invalid_credential_and_not_retried(sim: FalSimulator, auth_error: Any) -> None:
    sim.add_account(TEAM)
    sleeps: list[float] = []
    client = make_client(sim.base_url, "nobody:nothing", sleeps=sleeps, auth_error=auth_error)
    with pytest.raises(CredentialError) as raised:
        client.get_json("/account/billing")
    assert raised.value.kind == "invalid"
    assert raised.value.status == 401
    assert "Invalid API key" in str(raised.value)
    assert sleeps == [] and len(sim.requests) == 1


def test_fal_says_how_to_fix_a_rejected_key(sim: FalSimulator) -> None:
    with pytest.raises(CredentialError, match=r"rejected the API key.*Add key"):
        make_client(sim.base_url, "nobody:nothing", auth_error=fal_auth_error).get_json("/keys")


@pytest.mark.parametrize("auth_error", [default_auth_error, fal_auth_error], ids=["default", "fal"])
def test_a_403_from_an_api_scoped_key_is_insufficient_scope(sim: FalSimulator, auth_error: Any) -> None:
    sim.add_account(TEAM)
    api_key = sim.issue_key(TEAM, scope="API")
    sleeps: list[float] = []
    client = make_client(sim.base_url, api_key, sleeps=sleeps, auth_error=auth_error)
    with pytest.raises(CredentialError) as raised:
        client.get_json("/keys")
    assert raised.value.kind == "insufficient_scope"
    assert raised.value.status == 403
    assert "Admin" in str(raised.value)
    assert sleeps == [] and len(sim.requests) == 1


def test_fal_explains_that_an_admin_key_is_needed(sim: FalSimulator) -> None:
    sim.add_account(TEAM)
    client = make_client(sim.base_url, sim.issue_key(TEAM, scope="API"), auth_error=fal_auth_error)
    with pytest.raises(CredentialError, match=r"not Admin-scoped.*set Scope to Admin"):
        client.get_json("/models/usage")


def test_a_404_is_an_api_error_not_retried(sim: FalSimulator, admin_key: str) -> None:
    sleeps: list[float] = []
    with pytest.raises(ApiError) as raised:
        make_client(sim.base_url, admin_key, sleeps=sleeps).get_json("/no/such/thing")
    assert raised.value.status == 404
    assert "/no/such/thing" in str(raised.value) and "HTTP 404" in str(raised.value)
    assert sleeps == [] and len(sim.requests) == 1


def test_a_400_carries_fal_s_error_message(sim: FalSimulator, admin_key: str) -> None:
    with pytest.raises(ApiError, match="validation_error: Unsupported timezone") as raised:
        make_client(sim.base_url, admin_key).get_json("/models/usage", {"timezone": "Europe/Paris"})
    assert raised.value.status == 400


def test_an_error_without_fal_s_envelope_uses_the_reason_phrase(sim: FalSimulator, admin_key: str) -> None:
    sim.inject(Fault("/account/billing", status=418, body=b"teapot"))
    with pytest.raises(ApiError, match="HTTP 418: I'm a Teapot"):
        make_client(sim.base_url, admin_key).get_json("/account/billing")


# -- redirects and headers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_the_key_never_reaches_the_other_host(status: int) -> None:
    with local_server(ok_json) as elsewhere:

        def redirect(_request: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
            return status, {"Location": f"http://localhost:{elsewhere.port}/stolen"}, b""

        with local_server(redirect) as origin:
            sleeps: list[float] = []
            client = make_client(origin.base_url, "kid:ksecret", sleeps=sleeps)
            with pytest.raises(ApiError) as raised:
                client.get_json("/keys")
    assert elsewhere.received == []
    assert len(origin.received) == 1
    assert origin.received[0]["headers"]["Authorization"] == "Key kid:ksecret"
    message = str(raised.value)
    assert raised.value.status == status
    assert "redirect" in message and "localhost" in message and "/keys" in message
    assert "ksecret" not in message
    assert sleeps == []


def test_a_redirect_without_a_location_is_still_refused() -> None:
    with local_server(lambda _r: (302, {}, b"")) as origin, pytest.raises(ApiError, match="another location"):
        make_client(origin.base_url).get_json("/keys")


def test_the_request_carries_our_key_user_agent_and_accept_header() -> None:
    with local_server(ok_json) as server:
        assert make_client(server.base_url, "kid:ksecret").get_json("/keys", {"limit": 5}) == {"ok": True}
    (request,) = server.received
    assert request["method"] == "GET"
    assert request["path"] == "/v1/keys?limit=5"
    assert request["headers"]["Authorization"] == "Key kid:ksecret"
    assert request["headers"]["User-Agent"] == f"connector-host/{__version__}"
    assert request["headers"]["Accept"] == "application/json"


def test_netrc_and_proxy_settings_cannot_replace_the_key_or_divert_the_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login intruder password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with local_server(ok_json) as server:
        make_client(server.base_url, "kid:ksecret", attempts=1).get_json("/keys")
    assert server.received[0]["headers"]["Authorization"] == "Key kid:ksecret"


def test_the_key_is_built_for_every_request_so_a_rotated_key_is_used_at_once() -> None:
    keys = iter(["first:one", "second:two"])
    current = {"key": next(keys)}
    with local_server(ok_json) as server:
        client = ApiClient(server.base_url, authorization=lambda: f"Key {current['key']}", vendor="x")
        client.get_json("/a")
        current["key"] = next(keys)
        client.get_json("/b")
        client.close()
    assert [r["headers"]["Authorization"] for r in server.received] == ["Key first:one", "Key second:two"]


def test_a_vendor_names_the_credential_header_and_adds_fixed_and_per_request_headers() -> None:
    # Anthropic: the key travels as x-api-key, every request says its API version, one endpoint wants a beta flag.
    with local_server(ok_json) as server:
        client = ApiClient(
            server.base_url,
            authorization=lambda: "sk-secret",
            vendor="x",
            auth_header="x-api-key",
            headers={"anthropic-version": "2023-06-01"},
        )
        client.get_json("/a")
        client.get_json("/b", headers={"anthropic-beta": "flag", "x-api-key": "not this"})
        client.close()
    sent = [{name.lower(): value for name, value in r["headers"].items()} for r in server.received]
    assert [h["x-api-key"] for h in sent] == ["sk-secret", "sk-secret"]  # a per-request header never replaces it
    assert all(h["anthropic-version"] == "2023-06-01" and "authorization" not in h for h in sent)
    assert ("anthropic-beta" in sent[0], sent[1]["anthropic-beta"]) == (False, "flag")


# -- base URLs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.fal.ai/v1", "https://api.fal.ai/v1"),
        ("https://api.fal.ai/v1/", "https://api.fal.ai/v1"),
        ("https://proxy.internal.example:8443/fal", "https://proxy.internal.example:8443/fal"),
        ("http://127.0.0.1:8765/v1", "http://127.0.0.1:8765/v1"),
        ("http://127.0.0.2/v1", "http://127.0.0.2/v1"),
        ("http://localhost:8765/v1", "http://localhost:8765/v1"),
        ("http://LOCALHOST/v1", "http://LOCALHOST/v1"),
        ("http://[::1]:8765/v1", "http://[::1]:8765/v1"),
    ],
)
def test_https_and_loopback_http_base_urls_are_accepted(url: str, expected: str) -> None:
    assert validate_base_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://api.fal.ai/v1", "only allowed for loopback"),
        ("http://10.0.0.5/v1", "only allowed for loopback"),
        ("http://127.0.0.1.evil.example/v1", "only allowed for loopback"),
        ("http://localhost.evil.example/v1", "only allowed for loopback"),
        ("https://user:pass@api.fal.ai/v1", "must not carry credentials"),
        ("https://token@api.fal.ai/v1", "must not carry credentials"),
        ("http://user:pass@127.0.0.1/v1", "must not carry credentials"),
        ("https://api.fal.ai/v1?key=abc", "query"),
        ("https://api.fal.ai/v1#top", "fragment"),
        ("ftp://api.fal.ai/v1", "not an http"),
        ("api.fal.ai/v1", "not an http"),
        ("https:///v1", "not an http"),
        ("", "not an http"),
    ],
)
def test_unsafe_base_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_base_url(url)


def test_the_client_refuses_an_unsafe_base_url_before_sending_anything() -> None:
    with pytest.raises(ValueError, match="loopback"):
        make_client("http://api.fal.ai/v1")


# -- read-only ---------------------------------------------------------------------------------------------------


def test_a_post_to_a_path_not_declared_read_only_is_refused_and_nothing_is_sent(
    sim: FalSimulator, admin_key: str
) -> None:
    client = make_client(sim.base_url, admin_key, read_only_posts=frozenset({ESTIMATE_PATH}))
    with pytest.raises(ConfigError, match="refusing to POST to /keys"):
        client.post_json("/keys", {"alias": "new"})
    assert sim.requests == [] and client.requests_sent == 0


def test_a_client_without_read_only_posts_refuses_every_post(sim: FalSimulator, admin_key: str) -> None:
    with pytest.raises(ConfigError, match="read-only"):
        make_client(sim.base_url, admin_key).post_json(ESTIMATE_PATH, {})
    assert sim.requests == []


def test_the_declared_read_only_post_works(sim: FalSimulator, admin_key: str) -> None:
    client = make_client(sim.base_url, admin_key, read_only_posts=frozenset({ESTIMATE_PATH}))
    body = client.post_json(
        ESTIMATE_PATH, {"estimate_type": "unit_price", "endpoints": {"fal-ai/flux/dev": {"unit_quantity": 10}}}
    )
    assert body["total_cost"] == Decimal("0.25")
    assert [(r["method"], r["path"]) for r in sim.requests] == [("POST", "/v1/models/pricing/estimate")]


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "get", "post"])
def test_any_other_method_is_refused_and_nothing_is_sent(sim: FalSimulator, admin_key: str, method: str) -> None:
    client = make_client(sim.base_url, admin_key)
    with pytest.raises(ConfigError, match="read-only"):
        client._request(method, "/keys")
    assert sim.requests == []


WRITES = re.compile(r"\.(post|put|delete|patch)\(|\bmethod\s*=\s*[\"']|\brequests\.request\(")
NETWORK_IMPORTS = re.compile(
    r"^\s*(import|from)\s+(requests|httpx|aiohttp|urllib3|urllib\.request|http\.client)\b", re.MULTILINE
)


def product_sources() -> list[Path]:
    files = sorted((ROOT / "connector_sdk").glob("*.py")) + sorted((ROOT / "connectors" / "fal").glob("*.py"))
    return [path for path in files if path.name != "simulator.py"]


# The webhook sink POSTs to the admin's own receiver, never to a vendor: the only other module that talks HTTP.
OUTBOUND_TO_RECEIVERS = {"sinks.py"}


def test_no_code_outside_the_client_can_send_a_write_request() -> None:
    sources = product_sources()
    assert any(path.name == "connector.py" for path in sources) and len(sources) > 8
    offending = [
        f"{path.relative_to(ROOT)}:{text[: match.start()].count(chr(10)) + 1}: {match.group(0)}"
        for path in sources
        if path.name != "http.py" and path.name not in OUTBOUND_TO_RECEIVERS
        for text in [path.read_text(encoding="utf-8")]
        for match in WRITES.finditer(text)
    ]
    assert offending == []


def test_only_the_client_talks_http_and_it_sends_from_one_place() -> None:
    importers = [path.name for path in product_sources() if NETWORK_IMPORTS.search(path.read_text(encoding="utf-8"))]
    assert sorted(importers) == sorted({"http.py"} | OUTBOUND_TO_RECEIVERS)
    client_source = (ROOT / "connector_sdk" / "http.py").read_text(encoding="utf-8")
    assert WRITES.findall(client_source) == []
    assert client_source.count("self._session.request(") == 1
    assert 'if method not in ("GET", "POST"):' in client_source


def test_the_fal_connector_allows_only_the_price_estimate_post() -> None:
    from connectors.fal.config import FalConfig
    from connectors.fal.connector import FalConnector

    connector = FalConnector(FalConfig(api_key="kid:ksecret"))
    try:
        assert connector.client.read_only_posts == frozenset({"/models/pricing/estimate"})
    finally:
        connector.close()


# -- decimals -----------------------------------------------------------------------------------------------------


def test_json_numbers_are_parsed_as_exact_decimals(sim: FalSimulator, admin_key: str) -> None:
    body = b'{"a": 0.1, "b": 1.10, "c": 3, "d": [0.000125, 12345678901234567890.123456789], "e": 1e-7}'
    sim.inject(Fault("/account/billing", status=200, body=body))
    parsed = make_client(sim.base_url, admin_key).get_json("/account/billing")
    assert parsed["a"] == Decimal("0.1") and isinstance(parsed["a"], Decimal)
    assert str(parsed["b"]) == "1.10"
    assert parsed["c"] == 3 and type(parsed["c"]) is int
    assert parsed["d"] == [Decimal("0.000125"), Decimal("12345678901234567890.123456789")]
    assert parsed["e"] == Decimal("1E-7")
    assert parsed["a"] + parsed["a"] + parsed["a"] == Decimal("0.3")


# -- secrets -----------------------------------------------------------------------------------------------------

KEY_ID = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=6, max_size=24)
KEY_SECRET = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=12, max_size=48)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key_id=KEY_ID,
    key_secret=KEY_SECRET,
    status=st.sampled_from([400, 401, 403, 429, 500, 0]),
    echo=st.sampled_from(["header", "key", "secret"]),
)
def test_a_key_never_appears_in_errors_reprs_or_logs(
    sim: FalSimulator, key_id: str, key_secret: str, status: int, echo: str
) -> None:
    sim.clear_faults()
    key = f"{key_id}:{key_secret}"
    echoed = {"header": f"Key {key}", "key": key, "secret": key_secret}[echo]
    if status == 0:
        sim.inject(Fault("/account/billing", action="truncate", times=5))
    else:
        envelope = {"error": {"type": "authorization_error", "message": f"you sent {echoed} and we refuse it"}}
        sim.inject(Fault("/account/billing", status=status, body=json.dumps(envelope).encode(), times=5))
    client = ApiClient(
        sim.base_url,
        authorization=lambda: f"Key {key}",
        vendor="fal",
        retry=RetryPolicy(max_attempts=2, backoff_base=0.01),
        auth_error=fal_auth_error,
        sleep=lambda _seconds: None,
    )
    with capture_logs() as captured, pytest.raises(ConnectorHostError) as raised:
        client.get_json("/account/billing")
    client.close()
    shown = [
        str(raised.value),
        repr(raised.value),
        "".join(traceback.format_exception(raised.value)),
        repr(client),
        repr(captured),
    ]
    for text in shown:
        assert key_secret not in text
        assert key not in text


def test_the_client_repr_names_only_the_url_and_vendor() -> None:
    client = make_client("https://api.fal.ai/v1", "kid:ksecret-value")
    assert repr(client) == "ApiClient(base_url='https://api.fal.ai/v1', vendor='fal')"


def test_redact_hides_sensitive_keys_at_any_depth() -> None:
    event = {
        "event": "connected",
        "api_key": "kid:ksecret",
        "Authorization": "Key kid:ksecret",
        "config": {"Password": "pw", "base_url": "https://api.fal.ai/v1", "inner": {"token": "t"}},
        "attempts": [{"secret": "s", "n": 1}, ("credential", "fine")],
        "value": SecretStr("wrapped"),
        "count": 3,
    }
    assert logs.redact(None, "info", event) == {
        "event": "connected",
        "api_key": "[redacted]",
        "Authorization": "[redacted]",
        "config": {"Password": "[redacted]", "base_url": "https://api.fal.ai/v1", "inner": {"token": "[redacted]"}},
        "attempts": [{"secret": "[redacted]", "n": 1}, ["credential", "fine"]],
        "value": "[redacted]",
        "count": 3,
    }


def test_redact_scrubs_registered_secrets_from_every_value() -> None:
    secret = "reg1stered-" + "x7Qp2" * 3
    logs.secrets.add(secret)
    event = {
        "event": f"request failed for Key kid:{secret}",
        "reason": f"fal said {secret}!",
        "details": {"where": [f"a {secret} b"]},
    }
    cleaned = logs.redact(None, "error", event)
    assert secret not in repr(cleaned)
    assert cleaned["event"] == "request failed for Key kid:[redacted]"
    assert cleaned["details"] == {"where": ["a [redacted] b"]}


def test_very_short_values_are_not_registered_as_secrets() -> None:
    registry = logs.SecretRegistry()
    registry.add("abc")
    assert registry.scrub("abc abcdef") == "abc abcdef"


def test_a_secret_that_contains_another_is_scrubbed_whole() -> None:
    registry = logs.SecretRegistry()
    for n in range(12):
        registry.add(f"secret{n:02d}")
        registry.add(f"secret{n:02d}-and-its-longer-tail")
    for n in range(12):
        assert registry.scrub(f"<secret{n:02d}-and-its-longer-tail>") == "<[redacted]>"
        assert registry.scrub(f"<secret{n:02d}>") == "<[redacted]>"


def test_configured_logging_writes_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "c0nfigured-" + "Zk9" * 4
    logs.secrets.add(secret)
    saved = structlog.get_config()
    try:
        logs.configure_logging(level="info", json_output=True)
        structlog.get_logger().info("checked", api_key=f"kid:{secret}", note=f"echo {secret}", base="https://x")
    finally:
        structlog.configure(**saved)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert secret not in json.dumps(line)
    assert line["api_key"] == "[redacted]" and line["note"] == "echo [redacted]" and line["base"] == "https://x"
