"""The connector kit's simulator building blocks, through a toy vendor that uses every one of them over real HTTP."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from connector_sdk.kit.simulator import (
    ApiError,
    Fault,
    KeyRing,
    PageSize,
    Request,
    SimKey,
    Simulator,
    after_page,
    control_call,
    credentials,
    decode_offset,
    encode_offset,
    instant,
    offset_page,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class ToyVendor(Simulator):
    """A vendor with bearer keys, an offset-paged listing, an ``after``-paged one and a path parameter."""

    name = "toy-simulator"
    api_prefix = "/v1"
    error_kinds = {401: "invalid_api_key", 403: "insufficient_scope", 404: "not_found"}
    default_error_kind = "invalid_request_error"

    def __init__(self, **options: Any) -> None:
        super().__init__(now=T0, **options)
        self.projects = [{"id": f"proj_{n:02d}", "name": f"Project {n}"} for n in range(7)]
        self.issued = 0
        self.routes.add("GET", "/projects", self._projects, auth="read")
        self.routes.add("GET", "/projects/{project_id}", self._project, auth="read")
        self.routes.add("GET", "/members", self._members, auth="read")
        self.routes.add("POST", "/projects", self._create, auth="admin")
        self.routes.add("GET", "/boom", self._boom)
        self.control_routes.add("POST", "/projects/{project_id}/archive", control_call(self.archive, status=201))

    def error_body(self, status: int, kind: str, message: str, details: Mapping[str, Any]) -> bytes:
        return json.dumps(
            {"error": {"message": message, "type": kind, "param": None, "code": None, **details}}
        ).encode()

    def authenticate(self, request: Request, requirement: Any) -> SimKey:
        key = self.keyring.verify(credentials(request.authorization, "Bearer") or "")
        if key is None:
            raise ApiError(401, "Incorrect API key provided")
        if requirement == "admin" and key.scope != "admin":
            raise ApiError(403, "This key cannot write")
        return key

    def issue_key(self, account: str, *, scope: str = "admin") -> str:
        self.issued += 1
        key = SimKey(f"key_{self.issued}", f"sk-{account}-{self.issued:04d}", account, scope, "Key", "2026-01-01")
        return self.keyring.add(key).secret

    def truth(self, account: str, start: datetime, end: datetime) -> Any:
        return [{"account": account, "hours": (end - start) // timedelta(hours=1), "cost": "1.50"}]

    def _projects(self, request: Request) -> dict[str, Any]:
        sizes = PageSize(default=2, cap=3, reject_above=5)
        page, following = offset_page(
            self.projects, decode_offset(request.one("page"), param="page"), sizes.read(request.one("limit"))
        )
        return {
            "data": list(page),
            "has_more": following is not None,
            "next_page": None if following is None else encode_offset(following),
        }

    def _members(self, request: Request) -> dict[str, Any]:
        page, more = after_page(self.projects, request.one("after"), 3, lambda item: item["id"])
        return {"data": list(page), "has_more": more, "last_id": page[-1]["id"] if page else None}

    def _project(self, request: Request) -> dict[str, Any]:
        for project in self.projects:
            if project["id"] == request.params["project_id"]:
                return project
        raise ApiError(404, f"No project {request.params['project_id']}", details={"param": "project_id"})

    def _create(self, request: Request) -> dict[str, Any]:
        return {"created": request.json()}

    def _boom(self, request: Request) -> dict[str, Any]:
        raise RuntimeError("a bug in the simulator")

    def archive(self, project_id: str, *, at: datetime | str | None = None) -> dict[str, Any]:
        """A vendor's own control operation: archive a project at a moment (default: now)."""
        for project in self.projects:
            if project["id"] == project_id:
                project["archived_at"] = (self.now if at is None else instant(at)).isoformat()
                return project
        raise KeyError(f"unknown project {project_id!r}")


@pytest.fixture
def toy():
    with ToyVendor() as sim:
        yield sim


@pytest.fixture
def key(toy: ToyVendor) -> str:
    return toy.issue_key("acme")


def get(toy: ToyVendor, path: str, key: str | None = None, **params: Any) -> requests.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return requests.get(toy.base_url + path, headers=headers, params=params, timeout=5)


def control(toy: ToyVendor, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, toy.root_url + "/_sim" + path, timeout=5, **kwargs)


# -- routes, auth and envelopes --------------------------------------------------------------------------------
def test_a_route_with_a_path_parameter_answers_json(toy, key):
    response = get(toy, "/projects/proj_03", key)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Server"].startswith("toy-simulator/")
    assert response.json() == {"id": "proj_03", "name": "Project 3"}


def test_errors_come_in_the_vendors_envelope_with_its_kinds(toy, key):
    assert get(toy, "/projects/proj_99", key).json() == {
        "error": {"message": "No project proj_99", "type": "not_found", "param": "project_id", "code": None}
    }
    unknown = get(toy, "/nowhere", key)
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found"
    outside = requests.get(toy.root_url + "/projects", timeout=5)
    assert outside.status_code == 404, "paths outside the API prefix are not served"


def test_a_wrong_method_is_405_with_allow(toy, key):
    response = requests.delete(toy.base_url + "/projects", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_handler_that_raises_answers_500_in_the_envelope(toy):
    response = get(toy, "/boom")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "RuntimeError" in response.json()["error"]["message"]


def test_missing_wrong_and_revoked_keys_get_401_and_a_read_key_403_on_writes(toy, key):
    assert get(toy, "/projects").status_code == 401
    assert get(toy, "/projects", "sk-made-up").json()["error"]["type"] == "invalid_api_key"
    reader = toy.issue_key("acme", scope="read")
    assert get(toy, "/projects", reader).status_code == 200
    write = requests.post(toy.base_url + "/projects", json={}, headers={"Authorization": f"Bearer {reader}"}, timeout=5)
    assert write.status_code == 403 and write.json()["error"]["type"] == "insufficient_scope"
    toy.revoke_key(toy.keyring.verify(key).key_id)
    assert get(toy, "/projects", key).status_code == 401


def test_a_json_body_reaches_the_handler_and_a_bad_one_is_400(toy, key):
    auth = {"Authorization": f"Bearer {key}"}
    ok = requests.post(toy.base_url + "/projects", json={"price": 1.25}, headers=auth, timeout=5)
    assert ok.json() == {"created": {"price": "1.25"}}, "a Decimal is read exactly and answered as text"
    bad = requests.post(toy.base_url + "/projects", data=b"{nope", headers=auth, timeout=5)
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "Request body must be JSON"


def test_the_request_log_keeps_no_credentials(toy, key):
    get(toy, "/projects", key, limit="2")
    [entry] = toy.requests
    assert entry == {
        "method": "GET",
        "path": "/v1/projects",
        "query": {"limit": ["2"]},
        "has_auth": True,
        "status": 200,
    }
    assert key not in repr(toy.requests)


# -- paging ----------------------------------------------------------------------------------------------------
def test_page_and_next_page_walk_every_item_once(toy, key):
    seen, token = [], None
    while True:
        body = get(toy, "/projects", key, **({} if token is None else {"page": token})).json()
        seen += [project["id"] for project in body["data"]]
        token = body["next_page"]
        assert body["has_more"] == (token is not None)
        if token is None:
            break
    assert seen == [project["id"] for project in toy.projects]


def test_after_and_has_more_walk_every_item_once_and_an_unknown_after_is_400(toy, key):
    seen, after = [], None
    while True:
        body = get(toy, "/members", key, **({} if after is None else {"after": after})).json()
        seen += [item["id"] for item in body["data"]]
        after = body["last_id"]
        if not body["has_more"]:
            break
    assert seen == [project["id"] for project in toy.projects]
    assert get(toy, "/members", key, after="proj_77").status_code == 400


def test_a_limit_gets_the_default_the_cap_or_a_400_above_the_maximum(toy, key):
    assert len(get(toy, "/projects", key).json()["data"]) == 2
    assert len(get(toy, "/projects", key, limit="1").json()["data"]) == 1
    assert len(get(toy, "/projects", key, limit="5").json()["data"]) == 3, "capped silently"
    refused = get(toy, "/projects", key, limit="6")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Parameter 'limit' must be at most 5, got 6"
    assert get(toy, "/projects", key, limit="zero").status_code == 400
    assert get(toy, "/projects", key, page="not-a-cursor").json()["error"]["message"] == "Invalid page 'not-a-cursor'"


def test_offset_cursors_round_trip_and_page_sizes_must_be_positive():
    assert decode_offset(encode_offset(1234)) == 1234
    assert decode_offset(None) == 0
    with pytest.raises(ApiError):
        decode_offset("LTE=")  # "-1"
    with pytest.raises(ValueError):
        PageSize(default=0)
    assert offset_page([1, 2, 3], 2, 5) == ([3], None)


# -- faults ----------------------------------------------------------------------------------------------------
def test_a_429_fault_carries_retry_after_after_good_requests_then_clears(toy, key):
    toy.inject(Fault("/projects", status=429, after=1, times=2, headers={"Retry-After": "7"}))
    statuses = [get(toy, "/projects", key) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 429, 429, 200]
    assert statuses[1].headers["Retry-After"] == "7"
    assert statuses[1].json()["error"]["type"] == "invalid_request_error"


def test_a_fault_on_the_prefixed_path_or_every_path_matches_too(toy, key):
    toy.inject(Fault("/v1/projects/proj_01", status=503))
    toy.inject(Fault("*", status=502))
    assert get(toy, "/projects/proj_01", key).status_code == 503
    assert get(toy, "/members", key).status_code == 502
    assert get(toy, "/members", key).status_code == 200


def test_truncate_and_raw_bodies_are_malformed_json(toy, key):
    toy.inject(Fault("/projects", action="truncate"))
    toy.inject(Fault("/projects", status=200, body=b"<html>gateway</html>"))
    for _ in range(2):
        with pytest.raises(ValueError):
            get(toy, "/projects", key).json()


def test_hang_drops_the_connection_and_reset_breaks_it_mid_body(toy, key):
    toy.inject(Fault("/projects", action="hang"))
    with pytest.raises(requests.ConnectionError):
        get(toy, "/projects", key)
    toy.inject(Fault("/projects", action="reset"))
    with pytest.raises(requests.RequestException):
        get(toy, "/projects", key)
    assert get(toy, "/projects", key).status_code == 200


def test_an_unknown_fault_action_is_refused():
    with pytest.raises(ValueError, match="unknown fault action"):
        ToyVendor().inject(Fault("*", action="explode"))


# -- keys and the server ---------------------------------------------------------------------------------------
def test_the_key_ring_checks_secrets_and_keeps_them_out_of_reprs():
    ring = KeyRing()
    key = ring.add(SimKey("k1", "sk-secret-1", "acme", "admin", "Main", "2026-01-01"))
    assert ring.verify("sk-secret-1") is key
    assert ring.verify("sk-secret-1", "k1") is key
    assert ring.verify("sk-secret-2", "k1") is None
    assert "sk-secret-1" not in repr(key)
    with pytest.raises(ValueError):
        ring.add(SimKey("k1", "other", "acme", "admin", "Dup", "2026-01-01"))
    ring.revoke("k1")
    assert ring.verify("sk-secret-1") is None
    assert ring.of("acme") == [key]
    with pytest.raises(KeyError):
        ring.revoke("k9")


def test_a_busy_port_raises_oserror_and_a_port_out_of_range_valueerror(toy):
    with pytest.raises(OSError):
        ToyVendor(port=int(toy.root_url.rsplit(":", 1)[1])).start()
    with pytest.raises(ValueError):
        ToyVendor(port=70000)


def test_stop_closes_the_port(key):
    sim = ToyVendor().start()
    host, port = sim.root_url.removeprefix("http://").split(":")
    sim.stop()
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()


# -- the control plane -----------------------------------------------------------------------------------------
def test_the_control_plane_describes_the_simulator(toy):
    body = control(toy, "GET", "").json()
    assert body == {"name": "toy-simulator", "base_url": toy.base_url, "now": T0.isoformat()}


def test_keys_are_issued_and_revoked_through_the_control_plane(toy):
    issued = control(toy, "POST", "/keys", json={"account": "acme", "scope": "read"})
    assert issued.status_code == 201
    body = issued.json()
    assert body["account"] == "acme" and body["key_id"] == "key_1"
    assert get(toy, "/projects", body["key"]).status_code == 200
    revoked = control(toy, "DELETE", "/keys/key_1")
    assert revoked.json() == {"key_id": "key_1", "revoked": True}
    assert get(toy, "/projects", body["key"]).status_code == 401
    assert control(toy, "DELETE", "/keys/key_9").status_code == 404
    assert control(toy, "POST", "/keys", json={"scope": "read"}).status_code == 400
    assert control(toy, "POST", "/keys", json={"account": "acme", "colour": "red"}).status_code == 400


def test_faults_are_injected_and_cleared_through_the_control_plane(toy, key):
    fault = {"path": "/projects", "status": 429, "times": 5, "headers": {"Retry-After": "1"}, "body": "slow down"}
    assert control(toy, "POST", "/faults", json=fault).status_code == 201
    limited = get(toy, "/projects", key)
    assert limited.status_code == 429 and limited.text == "slow down" and limited.headers["Retry-After"] == "1"
    assert control(toy, "DELETE", "/faults").status_code == 200
    assert get(toy, "/projects", key).status_code == 200
    for bad in ({"status": 500}, {"path": "*", "action": "explode"}, {"path": "*", "times": 0}, {"path": "*", "x": 1}):
        assert control(toy, "POST", "/faults", json=bad).status_code == 400, bad
    assert control(toy, "POST", "/faults", data=b"{not json", headers={"Content-Type": "application/json"}).json() == {
        "error": "the body is not valid JSON"
    }


def test_truth_and_the_clock_are_reachable_and_the_control_plane_is_never_logged_or_faulted(toy):
    toy.inject(Fault("*", status=500, times=100))
    truth = control(
        toy, "GET", "/truth", params={"account": "acme", "start": "2026-03-01T00:00:00Z", "end": "2026-03-02"}
    )
    assert truth.json() == [{"account": "acme", "hours": 24, "cost": "1.50"}]
    assert control(toy, "GET", "/truth", params={"account": "acme"}).status_code == 400
    moved = control(toy, "PUT", "/now", json={"now": "2026-03-05T12:00:00+00:00"}).json()
    assert moved == {"now": "2026-03-05T12:00:00+00:00", "follows_wall_clock": False}
    assert toy.now == datetime(2026, 3, 5, 12, tzinfo=UTC)
    assert control(toy, "PUT", "/now", json={"now": None}).json()["follows_wall_clock"] is True
    assert abs(toy.now - datetime.now(UTC)) < timedelta(minutes=5)
    assert control(toy, "GET", "/requests").json() == []
    assert toy.requests == []
    assert control(toy, "GET", "/nothing").status_code == 404


def test_the_control_plane_refuses_what_a_web_page_could_send(toy):
    rebound = control(toy, "GET", "", headers={"Host": "attacker.example:80"})
    assert rebound.status_code == 403
    form = control(toy, "POST", "/keys", data=b'{"account": "acme"}', headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    assert toy.keyring.of("acme") == []
    assert control(toy, "GET", "", headers={"Host": "localhost:1"}).status_code == 200


def test_a_vendor_adds_its_own_control_operations_that_call_a_python_method(toy):
    archived = control(toy, "POST", "/projects/proj_02/archive", json={"at": "2026-03-04T05:00:00Z"})
    assert archived.status_code == 201
    assert archived.json() == {"id": "proj_02", "name": "Project 2", "archived_at": "2026-03-04T05:00:00+00:00"}
    assert toy.archive("proj_03")["archived_at"] == T0.isoformat()  # the same operation, called in-process
    assert control(toy, "POST", "/projects/proj_99/archive").json() == {"error": "unknown project 'proj_99'"}
    assert control(toy, "POST", "/projects/proj_99/archive").status_code == 404
    assert control(toy, "POST", "/projects/proj_01/archive", json={"colour": "red"}).status_code == 400
    assert control(toy, "POST", "/projects/proj_01/archive", json={"at": "last week"}).status_code == 400
    assert control(toy, "DELETE", "/projects/proj_01/archive").status_code == 404
    assert "archived_at" not in toy.projects[1]


def test_instant_reads_datetimes_and_iso_text_as_utc():
    assert instant("2026-03-04T05:00:00Z") == datetime(2026, 3, 4, 5, tzinfo=UTC)
    assert instant("2026-03-04T06:00:00+01:00") == datetime(2026, 3, 4, 5, tzinfo=UTC)
    assert instant(datetime(2026, 3, 4, 5)) == datetime(2026, 3, 4, 5, tzinfo=UTC)
    with pytest.raises(ValueError):
        instant(1772600400)  # type: ignore[arg-type]
