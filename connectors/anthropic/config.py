"""The Anthropic connector's configuration."""

from __future__ import annotations

from pydantic import ConfigDict, Field, SecretStr, field_validator

from connector_sdk.http import validate_base_url
from connector_sdk.models import ConnectorConfig

DEFAULT_BASE_URL = "https://api.anthropic.com/v1"


class AnthropicConfig(ConnectorConfig):
    # A key pasted into the wrong field, or with a stray space, must not be echoed by the validation error.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    api_key: SecretStr = Field(
        title="Admin key",
        description="An Anthropic Admin key (sk-ant-admin...), created by an organization admin under Admin keys.",
    )
    settling_days: int = Field(
        2,
        title="Settling days",
        ge=1,
        le=31,
        description="How many whole days before today every sync reads again: Anthropic's cost data lands late.",
    )
    base_url: str = Field(
        DEFAULT_BASE_URL, title="Base URL", description="Anthropic's API base URL; change only for a proxy."
    )
    timeout_seconds: float = Field(
        60.0, title="Timeout (seconds)", gt=0, le=600, description="How long to wait for each answer from Anthropic."
    )

    @field_validator("api_key")
    @classmethod
    def _key_shape(cls, value: SecretStr) -> SecretStr:
        key = value.get_secret_value().strip()
        # Visible ASCII only: an HTTP header cannot carry a pasted zero-width space or curly quote.
        if not key or not all("!" <= c <= "~" for c in key):
            raise ValueError("an Anthropic key is one word of visible characters (copy it whole from the Console)")
        return SecretStr(key)

    @field_validator("base_url")
    @classmethod
    def _safe_url(cls, value: str) -> str:
        return validate_base_url(value)
