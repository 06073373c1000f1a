"""The fal.ai connector: hourly usage and cost per API key from fal's Platform APIs."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog

from connector_sdk.connector import Connector, packaged_manifest
from connector_sdk.errors import ApiError, ConfigError, CredentialError, ResponseError
from connector_sdk.http import ApiClient, RetryPolicy
from connector_sdk.models import AccountInfo, ListedKey, Manifest, Page, Price, SyncContext, SyncWindow, iso
from connector_sdk.paging import HourlyPages, follow_cursor
from connectors.fal.config import FalConfig
from connectors.fal.mapping import (
    KEYS_LISTING,
    UsagePage,
    UsageReader,
    own_admin_key,
    parse_listed_key,
    parse_usage_page,
)

SETUP_HINT = "In the fal dashboard open API Keys, click Add key, set Scope to Admin, then reconnect with the new key."
ESTIMATE_PATH = "/models/pricing/estimate"
PRICE_BATCH = 50
# fal documents no maximum page ("actual maximum depends on query type and expansion parameters"): ask for the
# first of these, and step down when fal says ``limit`` is too large. The size that worked is remembered.
PAGE_SIZES = (1000, 500, 200, 100, 50)
PAGE_SIZE_STATE = "usage_page_size"
KEYS_PAGE_SIZE = 100
LIMIT = re.compile(r"\blimit\b", re.IGNORECASE)
MAXIMUM = re.compile(r"(?:at most|less than or equal to|maximum(?: is| of)?|<=|≤)\s*:?\s*(\d+)", re.IGNORECASE)

log = structlog.get_logger()


def fal_auth_error(status: int, message: str) -> CredentialError:
    """fal answers 401 for a bad key and 403 (or a message about Admin) for a key without Admin scope."""
    if status == 403 or "admin" in message.lower():
        return CredentialError(
            f"fal accepted the API key but it is not Admin-scoped; usage and cost need an Admin key "
            f"(fal said: {message}). {SETUP_HINT}",
            kind="insufficient_scope",
            status=status,
        )
    return CredentialError(
        f"fal rejected the API key: it is invalid, malformed or revoked (fal said: {message}). {SETUP_HINT}",
        kind="invalid",
        status=status,
    )


def learned_page_size(state: Mapping[str, Any]) -> int | None:
    """The page size an earlier sync found fal accepts, if the connection's state holds a sensible one."""
    size = state.get(PAGE_SIZE_STATE)
    return size if isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= PAGE_SIZES[0] else None


def refuses_limit(error: ApiError) -> bool:
    """fal's 400 ``validation_error`` about the ``limit`` parameter: a page larger than it serves this query."""
    return error.status == 400 and error.detail.startswith("validation_error") and bool(LIMIT.search(error.detail))


def smaller_page_size(refused: int, detail: str) -> int | None:
    """The page size to ask for after fal refused ``refused``: the maximum fal's message names, else the next one
    down :data:`PAGE_SIZES`; ``None`` when there is none smaller."""
    named = MAXIMUM.search(detail)
    if named is not None and 1 <= int(named[1]) < refused:
        return int(named[1])
    return next((size for size in PAGE_SIZES if size < refused), None)


class FalConnector(Connector):
    id = "fal"
    config_model = FalConfig
    config: FalConfig

    def __init__(
        self, config: FalConfig, *, cancel: threading.Event | None = None, retry: RetryPolicy | None = None
    ) -> None:
        super().__init__(config, cancel=cancel)
        self._listing: list[ListedKey] | None = None  # what /keys listed during this connector's sync
        self.client = ApiClient(
            config.base_url,
            authorization=lambda: f"Key {config.api_key.get_secret_value()}",
            vendor="fal",
            timeout=(min(10.0, config.timeout_seconds), config.timeout_seconds),
            retry=retry or RetryPolicy.from_env(),
            read_only_posts=frozenset({ESTIMATE_PATH}),
            auth_error=fal_auth_error,
            sleep=self.sleep,
        )

    def __repr__(self) -> str:
        return f"FalConnector(base_url={self.config.base_url!r})"

    @classmethod
    def manifest(cls) -> Manifest:
        return packaged_manifest("connectors.fal", "fal")

    @classmethod
    def describe_state(cls, state: Mapping[str, Any]) -> dict[str, str]:
        size = learned_page_size(state)
        return {"usage page size": f"{size} rows, the largest fal accepted"} if size else {}

    def close(self) -> None:
        self.client.close()

    def check(self) -> AccountInfo:
        body = self.client.get_json("/account/billing", {"expand": "credits"})
        if not isinstance(body, dict) or not isinstance(body.get("username"), str) or not body["username"]:
            raise ResponseError("fal /account/billing: field 'username' is missing or not a string")
        details: dict[str, Any] = {}
        credits = body.get("credits")
        if isinstance(credits, dict) and "current_balance" in credits:
            details["credits"] = {
                "current_balance": str(credits["current_balance"]),
                "currency": credits.get("currency"),
            }
        return AccountInfo(account=body["username"], details=details)

    def listed_keys(self) -> list[ListedKey]:
        """Every key ``GET /keys`` lists (fal lists API-scope keys only), with its creator, every page of it."""

        def fetch(cursor: str | None) -> Any:
            params = {"limit": KEYS_PAGE_SIZE, "expand": "creator_info", **({"cursor": cursor} if cursor else {})}
            return self.client.get_json("/keys", params)

        listed: list[ListedKey] = []
        for page in follow_cursor(fetch, what=KEYS_LISTING):
            keys = page.get("keys")
            if not isinstance(keys, list):
                raise ResponseError(f"{KEYS_LISTING}: field 'keys' must be a list, got {type(keys).__name__}")
            # Items are numbered across pages, so a message names the one item of the listing that is wrong.
            listed += [parse_listed_key(key, f"{KEYS_LISTING} item {len(listed) + i}") for i, key in enumerate(keys)]
        return listed

    def list_keys(self) -> list[ListedKey]:
        """The keys ``/keys`` lists, and the connection's own Admin key, which no listing names though fal reports
        its traffic (by key id only: the secret never leaves the config).

        After a sync, the listing that sync read for its rows' names: the host asks right after it, and reading
        ``/keys`` again would cost a request (more, for many keys) for the same answer.
        """
        listed = self._listing if self._listing is not None else self.listed_keys()
        own = own_admin_key(self.config.api_key)
        return listed if any(key.key_id == own.key_id for key in listed) else [*listed, own]

    def prices(self, models: Sequence[str], *, now: datetime) -> list[Price]:
        """``GET /models/pricing`` 50 ids at a time; fal fails a whole batch with 404 for one unknown id, so such a
        batch is split in halves until the unknown ids are isolated and left out."""
        found: list[Price] = []
        batches = [list(models[i : i + PRICE_BATCH]) for i in range(0, len(models), PRICE_BATCH)]
        while batches:
            batch = batches.pop()
            try:
                body = self.client.get_json("/models/pricing", {"endpoint_id": batch})
            except ApiError as error:
                if error.status != 404:
                    raise
                if len(batch) > 1:
                    batches += [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
                continue
            listed = body.get("prices") if isinstance(body, dict) else None
            if not isinstance(listed, list):
                raise ResponseError("fal /models/pricing: field 'prices' must be a list")
            for i, price in enumerate(listed):
                try:
                    found.append(
                        Price(
                            model=price["endpoint_id"],
                            unit_price=price["unit_price"],
                            unit=price["unit"],
                            currency=price["currency"],
                            fetched_at=now,
                        )
                    )
                except (KeyError, TypeError, ValueError) as error:
                    raise ResponseError(f"fal /models/pricing: prices[{i}] is malformed ({error})") from None
        return sorted(found, key=lambda p: p.model)

    def estimate(self, quantities: dict[str, Decimal]) -> tuple[Decimal, str]:
        body = {"estimate_type": "unit_price", "endpoints": {m: {"unit_quantity": q} for m, q in quantities.items()}}
        answer = self.client.post_json(ESTIMATE_PATH, body)
        if not isinstance(answer, dict) or not isinstance(answer.get("total_cost"), int | Decimal):
            raise ResponseError("fal /models/pricing/estimate: field 'total_cost' is missing or not a number")
        return Decimal(answer["total_cost"]), str(answer.get("currency") or "USD")

    def sync(self, window: SyncWindow, context: SyncContext) -> Iterator[Page]:
        self._listing = self.listed_keys()
        aliases = {key.key_id: key.name or key.key_id for key in self._listing}
        params: dict[str, Any] = {
            "start": iso(window.start),
            "end": iso(window.end),
            "timezone": "UTC",
            "timeframe": "hour",
            "bound_to_timeframe": "true",
            "expand": ["time_series", "auth_method", "auth_method_structured"],
        }
        configured = self.config.page_size
        remembered = learned_page_size(context.state)
        size = configured or remembered or PAGE_SIZES[0]
        read = UsageReader(context, aliases)

        def fetch(cursor: str | None) -> UsagePage:
            nonlocal size, remembered
            while True:
                query = {**params, "limit": size, **({"cursor": cursor} if cursor else {})}
                try:
                    body = self.client.get_json("/models/usage", query, read=read)
                    break
                except ApiError as error:
                    if not refuses_limit(error):
                        raise
                    if configured:
                        raise ConfigError(
                            f"fal refused the configured page size {configured} ({error.detail}); lower page_size, "
                            "or leave it empty to let the connector find the largest page fal accepts"
                        ) from None
                    smaller = smaller_page_size(size, error.detail)
                    if smaller is None:
                        raise
                    log.info("fal_page_size_refused", refused=size, trying=smaller)
                    size = smaller  # strictly smaller each time: this ends
            if not configured and remembered != size:
                context.remember(PAGE_SIZE_STATE, size)
                remembered = size
            if isinstance(body, UsagePage):
                return body
            # The fast reader could not vouch for this body: the exact reader names what is wrong, or accepts it.
            return UsagePage(parse_usage_page(body, context, aliases), body["next_cursor"])

        pages = HourlyPages(window, what="fal /models/usage")
        sent = self.client.requests_sent
        for usage in follow_cursor(fetch, what="fal /models/usage", cursor_of=lambda usage: usage.next_cursor):
            page = pages.feed(usage.buckets, requests=self.client.requests_sent - sent)
            if page is not None:
                sent = self.client.requests_sent
                yield page
        yield pages.finish(requests=self.client.requests_sent - sent)
