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

PROJECT_NAME = "connector_sdk"
# Written here once: the build reads it (pyproject.toml, [tool.hatch.version]), so `--version` prints it without
# importlib.metadata, which costs that command more than click does.
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``hookimpl``, made on first use: every command imports this package, and pluggy costs more than most commands
    (``status``, ``report``) do otherwise."""
    if name != "hookimpl":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import pluggy

    value = pluggy.HookimplMarker(PROJECT_NAME)
    globals()[name] = value  # made once: every plugin must share the one marker
    return value


__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
