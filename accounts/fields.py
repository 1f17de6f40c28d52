"""A model field that keeps its value encrypted at rest (Fernet, with key rotation through MultiFernet).

Only the ciphertext reaches the database, so a database dump or a read replica never shows an AppSecret.
The value is decrypted when the row is loaded: code that uses the model sees plain text and never handles
ciphertext.  Fernet tokens are not deterministic, so the field cannot be filtered on (nothing needs to).
The cipher and its keys are ``wxnotify.encryption``'s, shared with the access_token cache.
"""

from __future__ import annotations

from django.db import models

from wxnotify import encryption


def encrypt_text(value: str) -> str:
    """Seal ``value`` under the first key (also used by migration 0002)."""
    return encryption.encrypt(value)


def decrypt_text(token: str) -> str:
    """Decrypt with any configured key; a value no key opens is a configuration error, said without the value."""
    return encryption.decrypt(token)


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
