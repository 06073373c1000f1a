"""connector-host's SDK: the plugin host, its store and scheduler, and what a connector plugin builds on.

A plugin module implements hooks from :mod:`connector_sdk.hookspecs` with :data:`hookimpl` (which marks a function
as the implementation of the hook of the same name) and is listed under the ``connector_sdk`` entry-point group::

    [project.entry-points.connector_sdk]
    myvendor = "myvendor_connector"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy

    hookimpl: pluggy.HookimplMarker
    __version__: str

PROJECT_NAME = "connector_sdk"


def __getattr__(name: str) -> Any:
    """``hookimpl`` and ``__version__``, made on first use: every command imports this package, and pluggy and
    ``importlib.metadata`` cost more than most commands (``status``, ``report``) do otherwise."""
    if name == "hookimpl":
        import pluggy

        value: Any = pluggy.HookimplMarker(PROJECT_NAME)
    elif name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("connector-host")
        except PackageNotFoundError:  # running from a source tree that was never installed
            value = "0.0.0"
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # made once: every plugin must share the one marker
    return value


__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
