"""Logging set-up for the CLI, and the redaction every log line goes through.

Library modules only call ``structlog.get_logger()``; :func:`configure_logging` is called once, by the CLI.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import structlog
from pydantic import SecretStr

SENSITIVE_KEYS = frozenset({"api_key", "authorization", "password", "secret", "token", "credential", "key_secret"})
REDACTED = "[redacted]"


class SecretRegistry:
    """Secret values in use by this process; any log value that contains one has it cut out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()  # longest first: a secret containing another goes whole

    def add(self, value: str) -> None:
        if len(value) >= 6:  # a very short value would redact ordinary words
            with self._lock:
                self._values = tuple(sorted({*self._values, value}, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


secrets = SecretRegistry()


def _clean(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, str):
        return secrets.scrub(value)
    if isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in SENSITIVE_KEYS else _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: drop sensitive keys' values and scrub known secrets from everything else."""
    return {key: REDACTED if key.lower() in SENSITIVE_KEYS else _clean(value) for key, value in event_dict.items()}


def configure_logging(*, level: str = "info", json_output: bool | None = None) -> None:
    """Configure structlog once: console lines on a terminal, JSON lines (one object per line) elsewhere."""
    if json_output is None:
        json_output = not sys.stderr.isatty()
    renderer: list[Any]
    if json_output:
        # No local variables in tracebacks: truncated to 80 characters, a key would no longer match the redactor.
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        renderer = [tracebacks, redact, structlog.processors.JSONRenderer()]
    else:
        renderer = [redact, structlog.dev.ConsoleRenderer()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
