"""Symmetric encryption of the secrets wxnotify keeps: AppSecrets at rest and access_tokens in the shared cache.

One cipher, MultiFernet over ``settings.WXNOTIFY_ENCRYPTION_KEYS``: the first key encrypts, every key decrypts, so
a key is rotated by putting a new one first, re-encrypting (``manage.py rotate_app_secrets``) and then dropping the
old one.  It lives in the project package, beside the logging and lock helpers, because two layers need it: the
``accounts`` model field and the token manager in ``wxnotify.wechat``, which must not import a domain app.

Nothing here puts a key or a plaintext into an exception message.
"""

from __future__ import annotations

from base64 import urlsafe_b64encode
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# The HKDF "info" of the development key derived from SECRET_KEY.  It must never change: an installation that
# still holds data under a derived key finds that key again by deriving it the same way (see derived_key).
_DERIVED_KEY_INFO = b"wxnotify.accounts.app_secret"

# What the settings and docs tell an operator to run; printed by the ImproperlyConfigured of a production start
# without keys.
GENERATE_KEY_COMMAND = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


class UndecryptableError(ImproperlyConfigured):
    """No configured key opens a stored value: a key was removed too early, or the value was never ours."""


def derived_key(secret_key: str) -> str:
    """The Fernet key that DEBUG runs derive from ``secret_key`` when WXNOTIFY_ENCRYPTION_KEYS is unset.

    Also what an operator lists as a decrypt-only key when moving data that was stored under it to keys of its own
    (``manage.py encryption_key --derived``), since it is lost the moment SECRET_KEY changes.
    """
    hkdf = HKDF(algorithm=SHA256(), length=32, salt=None, info=_DERIVED_KEY_INFO)
    return urlsafe_b64encode(hkdf.derive(secret_key.encode())).decode()


def generate_key() -> str:
    """A new random Fernet key (32 bytes, URL-safe base64)."""
    return Fernet.generate_key().decode()


def check_keys(keys: list[str]) -> None:
    """Refuse an empty list or a value that is not a Fernet key, naming its position but never the value."""
    if not keys:
        raise ImproperlyConfigured("WXNOTIFY_ENCRYPTION_KEYS is empty: at least one Fernet key is needed.")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            # cryptography's message never contains the key; ours must not either.
            raise ImproperlyConfigured(
                f"WXNOTIFY_ENCRYPTION_KEYS: key {position} of {len(keys)} is not a Fernet key "
                f"(32 bytes in URL-safe base64; generate one with: {GENERATE_KEY_COMMAND})."
            ) from None


@lru_cache(maxsize=4)
def _cipher_for(keys: tuple[str, ...]) -> MultiFernet:
    check_keys(list(keys))
    return MultiFernet([Fernet(key) for key in keys])


def cipher() -> MultiFernet:
    """The current cipher, rebuilt only when the configured keys change (tests override them)."""
    return _cipher_for(tuple(settings.WXNOTIFY_ENCRYPTION_KEYS))


def encrypt(value: str) -> str:
    """``value`` as a Fernet token (ASCII) under the first key."""
    return cipher().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    """Open a token with any configured key; one that no key opens raises :class:`UndecryptableError`."""
    try:
        return cipher().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as exc:
        raise UndecryptableError(
            "An encrypted value cannot be decrypted with WXNOTIFY_ENCRYPTION_KEYS (was a key removed or changed?)."
        ) from exc


def is_under_first_key(token: str) -> bool:
    """Whether the first configured key alone opens ``token``: once every stored value is, the others can go."""
    first = settings.WXNOTIFY_ENCRYPTION_KEYS[0]
    try:
        Fernet(first).decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError):
        return False
    return True
