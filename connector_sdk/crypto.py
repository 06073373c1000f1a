"""Encryption of stored credentials, with a key kept apart from the store."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from connector_sdk.errors import EncryptionKeyError

KEY_ENV = "CONNECTOR_HOST_SECRET_KEY"
KEY_FILE = "secret.key"


class CredentialCipher:
    """Fernet (AES-128-CBC + HMAC-SHA256) over a JSON object of a connection's secret fields.

    The key comes from ``CONNECTOR_HOST_SECRET_KEY`` or from ``secret.key`` in the home, created with mode 0600 on
    first use. A copy of the database without the key reveals no secret.
    """

    def __init__(self, key: bytes, *, source: str = f"{KEY_ENV} or {KEY_FILE}") -> None:
        self.source = source
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise EncryptionKeyError(
                f"the encryption key in {source} is not a valid Fernet key (32 url-safe base64-encoded bytes)"
            ) from None

    def __repr__(self) -> str:
        return "CredentialCipher(<key hidden>)"

    @classmethod
    def for_home(cls, home: Path, *, create: bool = True) -> CredentialCipher:
        """The key from the environment, else the home's key file, created on first use unless ``create`` is off
        (a read-only home: nothing there is decrypted, so a throwaway key stands in for a missing file)."""
        from_env = os.environ.get(KEY_ENV)
        if from_env:
            return cls(from_env.encode(), source=KEY_ENV)
        path = home / KEY_FILE
        if not path.exists() and not create:
            return cls(Fernet.generate_key(), source=str(path))
        if not path.exists():
            key = Fernet.generate_key()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as error:
                raise EncryptionKeyError(f"cannot create the key file {path}: {error.strerror or error}") from None
            with os.fdopen(fd, "wb") as handle:
                handle.write(key)
        return cls(path.read_bytes().strip(), source=str(path))

    def encrypt(self, secrets: dict[str, str]) -> bytes:
        return self._fernet.encrypt(json.dumps(secrets, sort_keys=True).encode())

    def decrypt(self, token: bytes) -> dict[str, str]:
        try:
            return json.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise EncryptionKeyError(
                f"a stored credential cannot be decrypted with this encryption key ({self.source}): was the home's "
                f"secret.key replaced, or {KEY_ENV} changed? Restore the key, or reconnect the connection with its "
                "API key to store it again"
            ) from None
