"""The fal.ai connector plugin: hourly usage and cost per API key from fal's Platform APIs.

Registered through the ``connector_sdk`` entry point ``fal``, the same way a third-party connector is.
"""

from __future__ import annotations

from connector_sdk import hookimpl
from connector_sdk.connector import Connector


@hookimpl
def connector_sdk_register_connectors() -> list[type[Connector]]:
    from connectors.fal.connector import FalConnector

    return [FalConnector]
