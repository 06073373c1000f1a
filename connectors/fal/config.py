"""The fal connector's configuration."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from connector_sdk.http import validate_base_url
from connector_sdk.models import ConnectorConfig

DEFAULT_BASE_URL = "https://api.fal.ai/v1"


class FalConfig(ConnectorConfig):
    api_key: SecretStr = Field(
        title="API key",
        description="An Admin-scoped fal API key, KEY_ID:KEY_SECRET, from the fal dashboard's API Keys page.",
    )
    base_url: str = Field(
        DEFAULT_BASE_URL, title="Base URL", description="fal's Platform API base URL; change only for a proxy."
    )
    timeout_seconds: float = Field(
        60.0, title="Timeout (seconds)", gt=0, le=600, description="How long to wait for each answer from fal."
    )
    page_size: int | None = Field(
        None,
        title="Page size",
        ge=1,
        le=10_000,
        description=(
            "Usage items per request, to force one size; empty lets the connector ask for the largest page fal "
            "accepts (1,000 first, smaller when fal refuses) and remember it for the connection."
        ),
    )

    @field_validator("api_key")
    @classmethod
    def _key_shape(cls, value: SecretStr) -> SecretStr:
        key_id, sep, key_secret = value.get_secret_value().strip().partition(":")
        # Visible ASCII only: an HTTP header cannot carry a pasted zero-width space or curly quote.
        if not sep or not key_id or not key_secret or not all("!" <= c <= "~" for c in key_id + key_secret):
            raise ValueError("a fal API key has the form KEY_ID:KEY_SECRET (copy it whole from the fal dashboard)")
        return SecretStr(f"{key_id}:{key_secret}")

    @field_validator("base_url")
    @classmethod
    def _safe_url(cls, value: str) -> str:
        return validate_base_url(value)
