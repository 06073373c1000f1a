"""Building the plugin manager and collecting the connectors plugins register."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy
import structlog

from connector_sdk import PROJECT_NAME, hookspecs
from connector_sdk.connector import Connector
from connector_sdk.errors import ConfigError, ConnectorHostError, UnknownConnector
from connector_sdk.models import ConnectorConfig, Manifest
from connector_sdk.sinks import Sink

log = structlog.get_logger()

DISABLED_ENV = "CONNECTOR_HOST_DISABLED_PLUGINS"
"""Comma-separated plugin names the host must not load (the entry-point names, e.g. ``fal``)."""


class PluginLoadError(ConnectorHostError):
    """Raised only in strict mode: a plugin failed to load."""


@dataclass(frozen=True)
class LoadError:
    plugin: str
    error: str


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str | None
    source: str
    hooks: list[str]


@dataclass
class Plugins:
    """The loaded plugin manager with its connectors and what failed to load."""

    manager: pluggy.PluginManager
    connectors: dict[str, type[Connector]] = field(default_factory=dict)
    connector_plugin: dict[str, str] = field(default_factory=dict)
    sinks: dict[str, type[Sink]] = field(default_factory=dict)
    sink_plugin: dict[str, str] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    distributions: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def hook(self) -> Any:
        return self.manager.hook

    def connector(self, connector_id: str) -> type[Connector]:
        try:
            return self.connectors[connector_id]
        except KeyError:
            raise UnknownConnector(connector_id, list(self.connectors)) from None

    def sink(self, kind: str) -> type[Sink]:
        try:
            return self.sinks[kind]
        except KeyError:
            known = ", ".join(sorted(self.sinks)) or "none"
            raise ConfigError(f"no sink kind {kind!r} is loaded (loaded: {known})") from None

    def describe(self) -> list[PluginInfo]:
        out = []
        for name, plugin in self.manager.list_name_plugin():
            if plugin is None or name == "connector_sdk.hookspecs":
                continue
            dist = self.distributions.get(name)
            hooks = sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or [])
            out.append(
                PluginInfo(
                    name=name,
                    version=dist[1] if dist else None,
                    source=f"{dist[0]} (entry point)" if dist else getattr(plugin, "__name__", repr(plugin)),
                    hooks=hooks,
                )
            )
        return sorted(out, key=lambda info: info.name)


def get_plugin_manager(
    *,
    load_entrypoints: bool = True,
    plugins: Iterable[object] = (),
    blocked: Iterable[str] = (),
    strict: bool = False,
) -> Plugins:
    """Build a plugin manager and collect the connectors of every plugin.

    :param load_entrypoints: load the ``connector_sdk`` entry points (off in tests that bring their own plugins).
    :param plugins: extra plugin objects or modules to register, by their ``__name__``.
    :param blocked: plugin names never to load, added to those in ``CONNECTOR_HOST_DISABLED_PLUGINS``.
    :param strict: raise :class:`PluginLoadError` on the first broken plugin instead of reporting it.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    result = Plugins(manager=pm)
    blocked_names = set(blocked) | {n.strip() for n in os.environ.get(DISABLED_ENV, "").split(",") if n.strip()}
    for name in blocked_names:
        pm.set_blocked(name)

    def failed(name: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if strict:
            raise PluginLoadError(f"plugin {name!r} failed to load: {text}")
        log.warning("plugin_load_failed", plugin=name, error=text)
        result.errors.append(LoadError(plugin=name, error=text))

    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or repr(plugin)
        _register(pm, plugin, name, failed)

    if load_entrypoints:
        for ep in importlib.metadata.entry_points(group=PROJECT_NAME):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as error:
                failed(ep.name, error)
                continue
            if _register(pm, plugin, ep.name, failed) and ep.dist is not None:
                result.distributions[ep.name] = (ep.dist.name, ep.dist.version)

    while True:  # check_pending stops at the first plugin with an unknown hook; drop each one in turn
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as error:
            name = pm.get_name(error.plugin) or getattr(error.plugin, "__name__", repr(error.plugin))
            failed(name, error)
            pm.unregister(error.plugin)
        else:
            break

    _collect_connectors(result, failed)
    _collect_sinks(result, failed)
    return result


def _register(pm: pluggy.PluginManager, plugin: object, name: str, failed: Any) -> bool:
    holder = pm.get_plugin(name)
    try:
        pm.register(plugin, name=name)
    except Exception as error:
        # pluggy registers a plugin before it validates it; undo that so a half-registered plugin never runs,
        # but never unregister a plugin (this one or another) that held this name before.
        if holder is None and pm.get_plugin(name) is plugin:
            pm.unregister(name=name)
        failed(name, error)
        return False
    return True


def _collect(
    result: Plugins,
    hook: str,
    check: Callable[[Any], str],
    what: str,
    registry: dict[str, Any],
    owners: dict[str, str],
    failed: Any,
) -> None:
    """Call one ``register_*`` hook of every plugin, check each class it returns, and register it under its key;
    a bad class fails its plugin's whole list, and a key two plugins claim stays with the first, naming both."""
    pm = result.manager
    for impl in getattr(pm.hook, hook).get_hookimpls():
        name = pm.get_name(impl.plugin) or impl.plugin_name
        try:
            classes = list(impl.function() or [])  # a generator or tuple must not be consumed by the checks
            keys = [check(cls) for cls in classes]
        except Exception as error:
            failed(name, error)
            continue
        for key, cls in zip(keys, classes, strict=True):
            owner = owners.get(key)
            if owner is not None:
                failed(name, f"{what} {key!r} is already registered by plugin {owner!r}")
                continue
            registry[key] = cls
            owners[key] = name


def _collect_connectors(result: Plugins, failed: Any) -> None:
    _collect(
        result,
        "connector_sdk_register_connectors",
        _check_connector_class,
        "connector id",
        result.connectors,
        result.connector_plugin,
        failed,
    )


def _collect_sinks(result: Plugins, failed: Any) -> None:
    _collect(
        result, "connector_sdk_register_sinks", _check_sink_class, "sink kind", result.sinks, result.sink_plugin, failed
    )


def _check_sink_class(cls: object) -> str:
    if not (isinstance(cls, type) and issubclass(cls, Sink)) or not getattr(cls, "kind", None):
        raise TypeError(f"{cls!r} is not a connector_sdk.sinks.Sink subclass with a kind")
    return cls.kind


def _check_connector_class(cls: Any) -> str:
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise TypeError(f"{cls!r} is not a subclass of connector_sdk.connector.Connector")
    connector_id = getattr(cls, "id", None)
    if not isinstance(connector_id, str) or not connector_id:
        raise TypeError(f"{cls.__name__} has no connector id")
    config_model = getattr(cls, "config_model", None)
    if not (isinstance(config_model, type) and issubclass(config_model, ConnectorConfig)):
        raise TypeError(f"{cls.__name__}.config_model is not a ConnectorConfig subclass")
    manifest = cls.manifest()
    if not isinstance(manifest, Manifest) or manifest.id != connector_id:
        raise TypeError(f"{cls.__name__}.manifest() must return a Manifest with id {connector_id!r}")
    return connector_id
