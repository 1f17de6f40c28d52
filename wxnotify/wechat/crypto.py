"""Callback signatures and the AES "safe mode" message encryption of WeChat Official Accounts.

The algorithm follows WeChat's message encryption spec exactly: AES-256-CBC with the IV taken from
the first 16 bytes of the key, PKCS#7 padding to 32-byte blocks (not AES's 16), and a plaintext laid
out as ``random(16) + len(msg) as 4-byte big-endian + msg + appid``.  All comparisons of signatures
and AppIDs are constant-time so a caller cannot learn a valid value byte by byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PAD_BLOCK_SIZE = 32
ENCODING_AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")


class CallbackCryptoError(Exception):
    """Base class for everything that makes a callback message untrustworthy."""


class InvalidSignatureError(CallbackCryptoError):
    pass


class DecryptError(CallbackCryptoError):
    pass


class AppIdMismatchError(CallbackCryptoError):
    pass


class InvalidEncodingAESKeyError(CallbackCryptoError, ValueError):
    pass


def compute_signature(*parts: str) -> str:
    """SHA-1 hex of the parts sorted as strings and concatenated, as WeChat signs callbacks."""
    joined = "".join(sorted(str(part) for part in parts)).encode("utf-8")
    return hashlib.sha1(joined).hexdigest()  # noqa: S324 -- SHA-1 is what WeChat signs with


def signatures_match(expected: str, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("ascii", "replace"))


def verify_signature(token: str, signature: str | None, timestamp: str, nonce: str) -> bool:
    """Check the ``signature`` query parameter of URL verification and plaintext callbacks."""
    return signatures_match(compute_signature(token, timestamp, nonce), signature)


def decode_encoding_aes_key(encoding_aes_key: str) -> bytes:
    """Turn the 43-character EncodingAESKey into the 32-byte AES key."""
    if not ENCODING_AES_KEY_RE.match(encoding_aes_key or ""):
        raise InvalidEncodingAESKeyError("EncodingAESKey must be exactly 43 letters and digits")
    return base64.b64decode(encoding_aes_key + "=")


def pkcs7_pad(data: bytes, block_size: int = PAD_BLOCK_SIZE) -> bytes:
    amount = block_size - (len(data) % block_size)
    return data + bytes([amount]) * amount


def pkcs7_unpad(data: bytes, block_size: int = PAD_BLOCK_SIZE) -> bytes:
    if not data:
        raise DecryptError("empty plaintext")
    amount = data[-1]
    if not 1 <= amount <= block_size or amount > len(data):
        raise DecryptError("bad padding")
    return data[:-amount]


class CallbackCrypto:
    """Signs, verifies, encrypts and decrypts the messages of one official account's callback."""

    def __init__(self, token: str, encoding_aes_key: str, appid: str) -> None:
        self.token = token
        self.appid = appid
        self._key = decode_encoding_aes_key(encoding_aes_key)

    def __repr__(self) -> str:
        return f"<CallbackCrypto appid={self.appid}>"

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def verify_signature(self, signature: str | None, timestamp: str, nonce: str) -> bool:
        return verify_signature(self.token, signature, timestamp, nonce)

    def msg_signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return compute_signature(self.token, timestamp, nonce, encrypt)

    def verify_msg_signature(self, msg_signature: str | None, timestamp: str, nonce: str, encrypt: str) -> bool:
        """Check ``msg_signature``, which in safe mode signs the ciphertext as well."""
        return signatures_match(self.msg_signature(timestamp, nonce, encrypt), msg_signature)

    def encrypt(self, message: str | bytes, *, random_bytes: bytes | None = None) -> str:
        """Encrypt a message for WeChat; ``random_bytes`` is only fixed by tests."""
        body = message.encode("utf-8") if isinstance(message, str) else message
        prefix = random_bytes if random_bytes is not None else os.urandom(16)
        if len(prefix) != 16:
            raise ValueError("random_bytes must be 16 bytes")
        full = prefix + struct.pack(">I", len(body)) + body + self.appid.encode("utf-8")
        encryptor = self._cipher().encryptor()
        ciphertext = encryptor.update(pkcs7_pad(full)) + encryptor.finalize()
        return base64.b64encode(ciphertext).decode("ascii")

    def decrypt(self, encrypt: str) -> bytes:
        """Decrypt an ``<Encrypt>`` value and check that it was made for our AppID."""
        try:
            ciphertext = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecryptError("ciphertext is not base64") from exc
        if not ciphertext or len(ciphertext) % 16:
            raise DecryptError("ciphertext length is not a multiple of the AES block size")
        decryptor = self._cipher().decryptor()
        full = pkcs7_unpad(decryptor.update(ciphertext) + decryptor.finalize())
        if len(full) < 20:
            raise DecryptError("plaintext too short")
        (length,) = struct.unpack(">I", full[16:20])
        if 20 + length > len(full):
            raise DecryptError("declared message length exceeds plaintext")
        message, appid = full[20 : 20 + length], full[20 + length :]
        if not hmac.compare_digest(appid, self.appid.encode("utf-8")):
            raise AppIdMismatchError("message was encrypted for another AppID")
        return message

    def decrypt_message(self, msg_signature: str | None, timestamp: str, nonce: str, encrypt: str) -> bytes:
        """Verify ``msg_signature`` and then decrypt: the order a callback must use."""
        if not self.verify_msg_signature(msg_signature, timestamp, nonce, encrypt):
            raise InvalidSignatureError("msg_signature does not match")
        return self.decrypt(encrypt)

    def encrypt_reply(
        self,
        reply_xml: str,
        *,
        nonce: str,
        timestamp: str | None = None,
        random_bytes: bytes | None = None,
    ) -> str:
        """Wrap a passive reply in WeChat's encrypted reply envelope."""
        timestamp = timestamp or str(int(time.time()))
        encrypt = self.encrypt(reply_xml, random_bytes=random_bytes)
        signature = self.msg_signature(timestamp, nonce, encrypt)
        return (
            "<xml>\n"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n"
            f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>\n"
            f"<TimeStamp>{timestamp}</TimeStamp>\n"
            f"<Nonce><![CDATA[{nonce}]]></Nonce>\n"
            "</xml>"
        )
