"""The Anthropic connector plugin: hourly usage per API key and workspace, and billed cost per key (or per
workspace where the key cannot read cost analytics), from Anthropic's Admin API.

Registered through the ``connector_sdk`` entry point ``anthropic``, the same way a third-party connector is.
"""

from __future__ import annotations

from connector_sdk import hookimpl
from connector_sdk.connector import Connector


@hookimpl
def connector_sdk_register_connectors() -> list[type[Connector]]:
    from connectors.anthropic.connector import AnthropicConnector

    return [AnthropicConnector]
