"""Callback crypto against the known-good vectors in shared/docs/test-vectors.json, byte for byte."""

import json
from pathlib import Path

import pytest

from wxnotify.wechat.crypto import (
    AppIdMismatchError,
    CallbackCrypto,
    DecryptError,
    InvalidEncodingAESKeyError,
    InvalidSignatureError,
    compute_signature,
    pkcs7_pad,
    pkcs7_unpad,
    verify_signature,
)

VECTORS_FILE = Path(__file__).resolve().parents[1] / "data" / "test-vectors.json"
VECTORS = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))


def crypto_for(vector: dict) -> CallbackCrypto:
    return CallbackCrypto(vector["token"], vector["encoding_aes_key"], vector["appid"])


@pytest.mark.parametrize("name", ["official_sample", "doc_worked_example"])
def test_decrypts_vector_byte_for_byte(name):
    vector = VECTORS[name]
    message = crypto_for(vector).decrypt_message(
        vector["msg_signature"], vector["timestamp"], vector["nonce"], vector["encrypt"]
    )
    assert message == vector["plaintext"].encode("utf-8")


@pytest.mark.parametrize("name", ["official_sample", "doc_worked_example"])
def test_url_signature_of_vector(name):
    vector = VECTORS[name]
    assert compute_signature(vector["token"], vector["timestamp"], vector["nonce"]) == vector["signature"]
    assert verify_signature(vector["token"], vector["signature"], vector["timestamp"], vector["nonce"])
    assert not verify_signature(vector["token"], "0" * 40, vector["timestamp"], vector["nonce"])
    assert not verify_signature(vector["token"], None, vector["timestamp"], vector["nonce"])


@pytest.mark.parametrize(
    ("token", "timestamp", "nonce", "expected"),
    [
        ("AAAAA", "1714036504", "1514711492", "f464b24fc39322e44b38aa78f5edd27bd1441696"),
        ("AAAAA", "1714037059", "486452656", "899cf89e464efb63f54ddac96b0a0a235f53aa78"),
    ],
)
def test_official_url_verification_vectors(token, timestamp, nonce, expected):
    assert compute_signature(token, timestamp, nonce) == expected


def test_encrypts_with_fixed_random_byte_for_byte():
    vector = VECTORS["fixed_random_encrypt"]
    encrypted = crypto_for(vector).encrypt(vector["plaintext"], random_bytes=vector["random"].encode("ascii"))
    assert encrypted == vector["encrypt"]


def test_encrypted_reply_of_doc_example():
    vector = VECTORS["doc_worked_example"]
    reply = vector["reply"]
    body = crypto_for(vector).encrypt_reply(
        reply["plaintext"],
        nonce=reply["nonce"],
        timestamp=reply["timestamp"],
        random_bytes=reply["random"].encode("ascii"),
    )
    assert f"<Encrypt><![CDATA[{reply['encrypt']}]]></Encrypt>" in body
    assert f"<MsgSignature><![CDATA[{reply['msg_signature']}]]></MsgSignature>" in body
    assert f"<TimeStamp>{reply['timestamp']}</TimeStamp>" in body


def test_round_trip_with_random_prefix_and_chinese():
    crypto = crypto_for(VECTORS["official_sample"])
    message = "<xml><Content><![CDATA[你好，世界]]></Content></xml>"
    first, second = crypto.encrypt(message), crypto.encrypt(message)
    assert first != second
    assert crypto.decrypt(first).decode("utf-8") == message


def test_rejects_ciphertext_for_another_appid():
    vector = VECTORS["official_sample"]
    other = CallbackCrypto(vector["token"], vector["encoding_aes_key"], "wx0000000000000000")
    with pytest.raises(AppIdMismatchError):
        other.decrypt(vector["encrypt"])


def test_rejects_bad_msg_signature_before_decrypting():
    vector = VECTORS["official_sample"]
    with pytest.raises(InvalidSignatureError):
        crypto_for(vector).decrypt_message("f" * 40, vector["timestamp"], vector["nonce"], vector["encrypt"])


@pytest.mark.parametrize("garbage", ["", "not base64!!", "QUJD", "A" * 64 + "=="])
def test_rejects_garbage_ciphertext(garbage):
    with pytest.raises(DecryptError):
        crypto_for(VECTORS["official_sample"]).decrypt(garbage)


@pytest.mark.parametrize("key", ["short", "A" * 44, "A" * 42 + "!"])
def test_rejects_malformed_encoding_aes_key(key):
    with pytest.raises(InvalidEncodingAESKeyError):
        CallbackCrypto("t", key, "wx2c2769f8efd9abc2")


def test_padding_uses_32_byte_blocks():
    assert len(pkcs7_pad(b"x" * 32)) == 64
    assert pkcs7_pad(b"x" * 10)[-1] == 22
    assert pkcs7_unpad(pkcs7_pad(b"abc")) == b"abc"
    with pytest.raises(DecryptError):
        pkcs7_unpad(b"abc\x00")


def test_repr_hides_key():
    vector = VECTORS["official_sample"]
    assert vector["encoding_aes_key"] not in repr(crypto_for(vector))
