"""The OpenAI connector plugin: daily billed cost and hourly usage per API key and project, from OpenAI's
organization Admin APIs.

Registered through the ``connector_sdk`` entry point ``openai``, the same way a third-party connector is.
"""

from __future__ import annotations

from connector_sdk import hookimpl
from connector_sdk.connector import Connector


@hookimpl
def connector_sdk_register_connectors() -> list[type[Connector]]:
    from connectors.openai.connector import OpenAIConnector

    return [OpenAIConnector]
