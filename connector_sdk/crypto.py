"""Encryption of stored credentials, with a key kept apart from the store."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from connector_sdk.errors import StoreError

KEY_ENV = "CONNECTOR_HOST_SECRET_KEY"
KEY_FILE = "secret.key"


class CredentialCipher:
    """Fernet (AES-128-CBC + HMAC-SHA256) over a JSON object of a connection's secret fields.

    The key comes from ``CONNECTOR_HOST_SECRET_KEY`` or from ``secret.key`` in the home, created with mode 0600 on
    first use. A copy of the database without the key reveals no secret.
    """

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise StoreError(f"the encryption key in {KEY_ENV} or {KEY_FILE} is not a valid Fernet key") from None

    def __repr__(self) -> str:
        return "CredentialCipher(<key hidden>)"

    @classmethod
    def for_home(cls, home: Path) -> CredentialCipher:
        from_env = os.environ.get(KEY_ENV)
        if from_env:
            return cls(from_env.encode())
        path = home / KEY_FILE
        if not path.exists():
            key = Fernet.generate_key()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key)
        return cls(path.read_bytes().strip())

    def encrypt(self, secrets: dict[str, str]) -> bytes:
        return self._fernet.encrypt(json.dumps(secrets, sort_keys=True).encode())

    def decrypt(self, token: bytes) -> dict[str, str]:
        try:
            return json.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise StoreError(
                "a stored credential cannot be decrypted with this encryption key: was the home's secret.key "
                f"replaced, or {KEY_ENV} changed? Reconnect the connection with its key to store it again"
            ) from None
