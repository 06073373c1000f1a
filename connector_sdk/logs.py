"""Logging set-up for the CLI, and the redaction every log line goes through.

Library modules only call ``structlog.get_logger()``; :func:`configure_logging` is called once, by the CLI.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

from pydantic import SecretStr

# The standard library's level numbers (logging.DEBUG...), spelled out: status and report never import logging.
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
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
    """Configure structlog once: console lines on a terminal, JSON lines (one object per line) elsewhere.

    Importing structlog costs more than ``status`` or ``report`` do (its console renderer brings Rich's tracebacks,
    Pygments and asyncio), and they log nothing; so when no module has imported structlog yet, the configuration
    waits and is applied the moment one does, before that module can log a line.
    """
    if json_output is None:
        json_output = not sys.stderr.isatty()
    settings = {"threshold": LEVELS[level.upper()], "json_output": json_output}
    for finder in [f for f in sys.meta_path if isinstance(f, _ConfigureOnImport)]:
        sys.meta_path.remove(finder)  # configured again before structlog came: the latest settings win
    if "structlog" in sys.modules:
        _configure(**settings)
    else:
        sys.meta_path.insert(0, _ConfigureOnImport(settings))


class _ConfigureOnImport:
    """A finder on ``sys.meta_path`` that finds structlog for its first importer and configures it as soon as the
    module has run (``importlib.abc.MetaPathFinder``'s protocol; not subclassed, that module costs an import too)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "structlog" or self not in sys.meta_path:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # the usual finders', now that this one is out of their way
        loader = spec.loader if spec is not None else None
        if loader is None:
            return spec
        run = loader.exec_module
        settings = self.settings

        def exec_module(module: ModuleType) -> None:
            run(module)
            _configure(**settings)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _configure(*, threshold: int, json_output: bool) -> None:
    import structlog

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
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class _FirstUseLogger:
    """``structlog.get_logger()``, imported when a line is first logged rather than when the module is imported."""

    def __getattr__(self, name: str) -> Any:
        import structlog

        return getattr(structlog.get_logger(), name)


def get_logger() -> Any:
    """A logger for a module that commands which never log (``status``, ``report``) import: it behaves as
    ``structlog.get_logger()`` does but leaves importing structlog to the first line logged."""
    return _FirstUseLogger()
