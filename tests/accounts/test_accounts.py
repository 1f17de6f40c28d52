"""OfficialAccount rules, AppSecret encryption at rest, and the add_official_account command."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import OfficialAccount

SECRET = "0123456789abcdef0123456789abcdef"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

# Assertions read the English source strings, whatever translations the project ships.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def make_account(**overrides) -> OfficialAccount:
    fields = {"name": "Shop", "appid": "wx0123456789abcdef", "app_secret": SECRET, "token": "tok3n"}
    fields.update(overrides)
    return OfficialAccount(**fields)


def raw_secret(account: OfficialAccount) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT app_secret FROM accounts_officialaccount WHERE id = %s", [account.pk])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("appid", ["wx0123456789ABCDEF", "wx0123456789abcde", "xx0123456789abcdef", ""])
def test_appid_format_is_checked(appid):
    with pytest.raises(ValidationError) as caught:
        make_account(appid=appid).full_clean()
    assert "appid" in caught.value.message_dict


@pytest.mark.parametrize("mode", ["compatible", "safe"])
def test_encoding_aes_key_required_in_encrypted_modes(mode):
    with pytest.raises(ValidationError) as caught:
        make_account(message_mode=mode).full_clean()
    assert caught.value.message_dict["encoding_aes_key"] == [
        "An EncodingAESKey is required in compatible and safe message modes."
    ]
    make_account(message_mode=mode, encoding_aes_key=AES_KEY).full_clean()


@pytest.mark.parametrize("key", [AES_KEY[:-1], AES_KEY + "x", AES_KEY[:-1] + "-"])
def test_encoding_aes_key_is_43_letters_and_digits(key):
    with pytest.raises(ValidationError) as caught:
        make_account(message_mode="safe", encoding_aes_key=key).full_clean()
    assert "encoding_aes_key" in caught.value.message_dict


def test_plaintext_mode_needs_no_aes_key_and_rate_limit_is_positive():
    make_account().full_clean()
    with pytest.raises(ValidationError) as caught:
        make_account(send_rate_limit=0).full_clean()
    assert "send_rate_limit" in caught.value.message_dict


def test_callback_path_and_url(settings):
    settings.WXNOTIFY_PUBLIC_BASE_URL = "https://push.example.com"
    account = make_account()
    assert account.callback_path() == "/wechat/callback/wx0123456789abcdef/"
    assert account.callback_url() == "https://push.example.com/wechat/callback/wx0123456789abcdef/"


def test_app_secret_is_ciphertext_in_the_database_and_round_trips():
    account = make_account()
    account.save()
    stored = raw_secret(account)
    assert SECRET not in stored
    assert Fernet(django_settings.WXNOTIFY_ENCRYPTION_KEYS[0]).decrypt(stored.encode()) == SECRET.encode()
    reloaded = OfficialAccount.objects.get(pk=account.pk)
    assert reloaded.app_secret == SECRET
    assert reloaded.credentials().secret == SECRET
    assert SECRET not in repr(reloaded) and SECRET not in repr(reloaded.credentials())


def test_key_rotation_old_key_still_decrypts_and_rotation_reencrypts(settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WXNOTIFY_ENCRYPTION_KEYS = [old_key]
    account = make_account()
    account.save()
    under_old_key = raw_secret(account)

    settings.WXNOTIFY_ENCRYPTION_KEYS = [new_key, old_key]
    assert OfficialAccount.objects.get(pk=account.pk).app_secret == SECRET
    out = StringIO()
    call_command("rotate_app_secrets", stdout=out)
    assert "1 official account" in out.getvalue()
    rotated = raw_secret(account)
    assert rotated != under_old_key
    assert Fernet(new_key).decrypt(rotated.encode()) == SECRET.encode()

    settings.WXNOTIFY_ENCRYPTION_KEYS = [new_key]
    assert OfficialAccount.objects.get(pk=account.pk).app_secret == SECRET


def test_a_secret_no_key_opens_is_a_configuration_error_without_the_value(settings):
    account = make_account()
    account.save()
    settings.WXNOTIFY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(ImproperlyConfigured) as caught:
        OfficialAccount.objects.get(pk=account.pk)
    assert SECRET not in str(caught.value)
    assert raw_secret(account) not in str(caught.value)


def run_command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("add_official_account", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_add_official_account_creates_then_updates(settings):
    settings.WXNOTIFY_PUBLIC_BASE_URL = "https://push.example.com"
    out, err = run_command(
        "--appid", "wx0123456789abcdef", "--secret", SECRET, "--token", "tok3n",
        "--aes-key", AES_KEY, "--mode", "safe", "--name", "Shop",
    )  # fmt: skip
    account = OfficialAccount.objects.get(appid="wx0123456789abcdef")
    assert (account.name, account.message_mode, account.encoding_aes_key) == ("Shop", "safe", AES_KEY)
    assert account.app_secret == SECRET and account.is_active
    assert account.token_endpoint == "stable"
    assert "Created official account Shop (wx0123456789abcdef)" in out
    assert "https://push.example.com/wechat/callback/wx0123456789abcdef/" in out
    assert SECRET not in out + err

    new_secret = "fedcba9876543210fedcba9876543210"
    out, err = run_command(
        "--appid", "wx0123456789abcdef", "--secret", new_secret, "--token", "other",
        "--token-endpoint", "classic", "--inactive",
    )  # fmt: skip
    assert OfficialAccount.objects.count() == 1
    account.refresh_from_db()
    assert (account.name, account.message_mode, account.token_endpoint) == ("Shop", "safe", "classic")
    assert (account.app_secret, account.token, account.is_active) == (new_secret, "other", False)
    assert "Updated official account Shop" in out and "inactive" in out
    assert new_secret not in out + err


def test_add_official_account_bad_input_fails_in_words_without_the_secret():
    with pytest.raises(CommandError) as caught:
        run_command("--appid", "wxBAD", "--secret", SECRET, "--token", "tok3n", "--mode", "safe")
    message = str(caught.value)
    assert "AppID: An AppID is 'wx' followed by 16 lowercase hexadecimal characters." in message
    assert "EncodingAESKey: An EncodingAESKey is required in compatible and safe message modes." in message
    assert SECRET not in message
    assert caught.value.returncode == 1
    assert not OfficialAccount.objects.exists()


@pytest.mark.slow
def test_add_official_account_exit_code_and_output_in_a_process(tmp_path):
    """The real command line: exit status 1 and the reason on stderr, never the secret."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "WXNOTIFY_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
    }
    manage = [sys.executable, str(django_settings.BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=120)
    completed = subprocess.run(
        [*manage, "add_official_account", "--appid", "wx0123"],
        env={**env, "WECHAT_APP_SECRET": SECRET, "WECHAT_CALLBACK_TOKEN": "tok3n"},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    # The process speaks the project's language (LANGUAGE_CODE); the exact words are checked in-process above.
    assert "CommandError: Account wx0123 not saved:" in completed.stderr
    assert SECRET not in completed.stdout + completed.stderr


def test_time_zone_is_an_iana_name_and_gives_the_accounts_zone():
    account = make_account()
    assert account.time_zone == "Asia/Shanghai"
    assert account.zone.key == "Asia/Shanghai"
    account.time_zone = "Europe/Berlin"
    account.full_clean()
    assert account.zone.utcoffset(datetime(2026, 7, 1)) == timedelta(hours=2)
    with pytest.raises(ValidationError) as caught:
        make_account(time_zone="Beijing").full_clean()
    assert caught.value.message_dict["time_zone"] == ["Give an IANA time zone name such as Asia/Shanghai."]
