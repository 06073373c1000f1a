"""Encryption of stored credentials, with a key kept apart from the store."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from connector_sdk.errors import EncryptionKeyError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

KEY_ENV = "CONNECTOR_HOST_SECRET_KEY"
KEY_FILE = "secret.key"
FERNET_VERSION = 0x80  # the first byte of every Fernet token


def new_key() -> bytes:
    """A new Fernet key: 32 random bytes, url-safe base64 (what ``Fernet.generate_key`` makes)."""
    return base64.urlsafe_b64encode(os.urandom(32))


def _unbase64(text: bytes | str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text)
    except (binascii.Error, ValueError, TypeError):
        return b""


class CredentialCipher:
    """Fernet (AES-128-CBC + HMAC-SHA256) over a JSON object of a connection's secret fields.

    The key comes from ``CONNECTOR_HOST_SECRET_KEY`` or from ``secret.key`` in the home, created with mode 0600 on
    first use. A copy of the database without the key reveals no secret.

    Opening a home checks the key (:meth:`verify`) with the standard library alone: cryptography, which costs a
    command that only reads the store (``status``, ``report``) more than its queries do, is imported by the first
    encryption or decryption.
    """

    def __init__(self, key: bytes, *, source: str = f"{KEY_ENV} or {KEY_FILE}") -> None:
        self.source = source
        raw = _unbase64(key)
        if len(raw) != 32:  # what Fernet(key) refuses
            raise EncryptionKeyError(
                f"the encryption key in {source} is not a valid Fernet key (32 url-safe base64-encoded bytes)"
            )
        self._key = key
        self._signing_key = raw[:16]
        self._made: Fernet | None = None

    @property
    def _fernet(self) -> Fernet:
        if self._made is None:
            from cryptography.fernet import Fernet

            self._made = Fernet(self._key)
        return self._made

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
            return cls(new_key(), source=str(path))
        if not path.exists():
            key = new_key()
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
        from cryptography.fernet import InvalidToken

        try:
            return json.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise self._wrong_key() from None

    def verify(self, token: bytes) -> None:
        """Raise what :meth:`decrypt` raises for a token this key did not make, without decrypting it: Fernet's own
        check, the token's HMAC-SHA256 under the key's signing half, made with the standard library."""
        data = _unbase64(token)
        if len(data) < 1 + 8 + 32 or data[0] != FERNET_VERSION:
            raise self._wrong_key()
        signature = hmac.new(self._signing_key, data[:-32], hashlib.sha256).digest()
        if not hmac.compare_digest(signature, data[-32:]):
            raise self._wrong_key()

    def _wrong_key(self) -> EncryptionKeyError:
        return EncryptionKeyError(
            f"a stored credential cannot be decrypted with this encryption key ({self.source}): was the home's "
            f"secret.key replaced, or {KEY_ENV} changed? Restore the key, or reconnect the connection with its "
            "API key to store it again"
        )
