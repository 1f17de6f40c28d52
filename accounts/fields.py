"""A model field that keeps its value encrypted at rest (Fernet, with key rotation through MultiFernet).

Only the ciphertext reaches the database, so a database dump or a read replica never shows an AppSecret.
The value is decrypted when the row is loaded: code that uses the model sees plain text and never handles
ciphertext.  Fernet tokens are not deterministic, so the field cannot be filtered on (nothing needs to).
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@lru_cache(maxsize=4)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("WXNOTIFY_ENCRYPTION_KEYS is empty: at least one Fernet key is needed.")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        # The message of cryptography's error never contains the key; ours must not either.
        raise ImproperlyConfigured("WXNOTIFY_ENCRYPTION_KEYS holds a value that is not a Fernet key.") from exc


def fernet() -> MultiFernet:
    """The current cipher, rebuilt only when the configured keys change (tests override them)."""
    return _fernet_for(tuple(settings.WXNOTIFY_ENCRYPTION_KEYS))


def encrypt_text(value: str) -> str:
    return fernet().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt_text(token: str) -> str:
    """Decrypt with any configured key; a value no key opens is a configuration error, said without the value."""
    try:
        return fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeEncodeError) as exc:
        raise ImproperlyConfigured(
            "An encrypted value cannot be decrypted with WXNOTIFY_ENCRYPTION_KEYS (was a key removed or changed?)."
        ) from exc


class EncryptedTextField(models.TextField):
    """Text stored as a Fernet token; validators and forms see the plain value.

    An empty string is stored as an empty string (it is no secret), so "not set" stays visible in SQL.
    """

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt_text(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt_text(value)
