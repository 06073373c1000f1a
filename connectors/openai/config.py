"""The OpenAI connector's configuration."""

from __future__ import annotations

from pydantic import ConfigDict, Field, SecretStr, field_validator

from connector_sdk.http import validate_base_url
from connector_sdk.models import ConnectorConfig

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIConfig(ConnectorConfig):
    # A key pasted into the wrong field, or with a stray space, must not be echoed by the validation error.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    api_key: SecretStr = Field(
        title="Admin key",
        description="An OpenAI Admin key (sk-admin-...), created by an Organization Owner under Admin keys.",
    )
    # OpenAI restates the costs of recent days: 96 hours back re-read the three days before today in full,
    # even when the host does not widen windows to whole days (Connector.sync_window).
    lookback_hours: int = Field(
        96,
        title="Lookback hours",
        ge=0,
        le=24 * 31,
        description="How many recent hours every later sync polls again, for late revisions.",
    )
    restated_days: int = Field(
        3,
        title="Restated days",
        ge=0,
        le=31,
        description="How many whole days before today every sync reads again: OpenAI restates recent costs.",
    )
    base_url: str = Field(
        DEFAULT_BASE_URL, title="Base URL", description="OpenAI's API base URL; change only for a proxy."
    )
    timeout_seconds: float = Field(
        60.0, title="Timeout (seconds)", gt=0, le=600, description="How long to wait for each answer from OpenAI."
    )

    @field_validator("api_key")
    @classmethod
    def _key_shape(cls, value: SecretStr) -> SecretStr:
        key = value.get_secret_value().strip()
        # Visible ASCII only: an HTTP header cannot carry a pasted zero-width space or curly quote.
        if not key or not all("!" <= c <= "~" for c in key):
            raise ValueError("an OpenAI key is one word of visible characters (copy it whole from the platform)")
        return SecretStr(key)

    @field_validator("base_url")
    @classmethod
    def _safe_url(cls, value: str) -> str:
        return validate_base_url(value)
