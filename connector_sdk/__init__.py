"""connector-host's SDK: the plugin host, its store and scheduler, and what a connector plugin builds on.

A plugin module implements hooks from :mod:`connector_sdk.hookspecs` with :data:`hookimpl` and is listed under the
``connector_sdk`` entry-point group::

    [project.entry-points.connector_sdk]
    myvendor = "myvendor_connector"
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

PROJECT_NAME = "connector_sdk"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a function in a plugin module as the implementation of a hook of the same name."""

try:
    __version__ = version("connector-host")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
