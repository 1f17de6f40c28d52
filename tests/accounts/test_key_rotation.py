"""rotate_app_secrets moves stored secrets under the first key; rotating SECRET_KEY never loses an AppSecret."""

from __future__ import annotations

import subprocess
import time
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import OfficialAccount
from tests.factories import run_manage_py
from wxnotify import encryption
from wxnotify.wechat.tokens import cache_key

SECRET = "00112233445566778899aabbccddeeff"
pytestmark = pytest.mark.django_db


def stored_ciphertext(appid: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT app_secret FROM accounts_officialaccount WHERE appid = %s", [appid])
        return cursor.fetchone()[0]


def make_accounts(count: int) -> list[str]:
    appids = [f"wx{index:016x}" for index in range(1, count + 1)]
    for appid in appids:
        OfficialAccount.objects.create(appid=appid, name=appid, app_secret=SECRET, token="tok3n")
    return appids


def rotate(*args: str) -> str:
    out = StringIO()
    call_command("rotate_app_secrets", *args, stdout=out)
    return out.getvalue()


def test_rotation_moves_what_is_under_an_older_key_and_nothing_else(settings):
    old_key, new_key = encryption.generate_key(), encryption.generate_key()
    settings.WXNOTIFY_ENCRYPTION_KEYS = [old_key]
    moved_appids = make_accounts(2)
    settings.WXNOTIFY_ENCRYPTION_KEYS = [new_key, old_key]
    already = OfficialAccount.objects.create(appid="wx" + "e" * 16, name="new", app_secret=SECRET, token="tok3n")
    untouched = stored_ciphertext(already.appid)
    updated_at = {a.appid: a.updated_at for a in OfficialAccount.objects.all()}

    out = rotate()

    assert "Re-encrypted 2 AppSecret(s) under the first key (3 official account(s)" in out
    for appid in moved_appids:
        assert Fernet(new_key).decrypt(stored_ciphertext(appid).encode()).decode() == SECRET
    assert stored_ciphertext(already.appid) == untouched
    assert {a.appid: a.updated_at for a in OfficialAccount.objects.all()} == updated_at
    settings.WXNOTIFY_ENCRYPTION_KEYS = [new_key]
    assert {a.app_secret for a in OfficialAccount.objects.all()} == {SECRET}
    assert "Re-encrypted 0 AppSecret(s)" in rotate()


def test_check_says_whether_the_old_key_can_go(settings):
    old_key, new_key = encryption.generate_key(), encryption.generate_key()
    settings.WXNOTIFY_ENCRYPTION_KEYS = [old_key]
    make_accounts(3)
    settings.WXNOTIFY_ENCRYPTION_KEYS = [new_key, old_key]
    before = {appid: stored_ciphertext(appid) for appid in OfficialAccount.objects.values_list("appid", flat=True)}

    with pytest.raises(CommandError, match="still under an older key"):
        rotate("--check")
    assert {appid: stored_ciphertext(appid) for appid in before} == before  # --check changed nothing

    rotate()
    assert "3 of 3 AppSecret(s) are under the first key; 0 still need rotate_app_secrets." in rotate("--check")


def test_a_secret_no_key_opens_stops_the_rotation_before_anything_changes(settings):
    lost_key, old_key, new_key = (encryption.generate_key() for _ in range(3))
    settings.WXNOTIFY_ENCRYPTION_KEYS = [old_key]
    make_accounts(1)
    settings.WXNOTIFY_ENCRYPTION_KEYS = [lost_key]
    OfficialAccount.objects.create(appid="wx" + "d" * 16, name="lost", app_secret=SECRET, token="tok3n")
    settings.WXNOTIFY_ENCRYPTION_KEYS = [new_key, old_key]
    first = stored_ciphertext("wx0000000000000001")

    with pytest.raises(CommandError) as caught:
        rotate()

    assert str(caught.value) == (
        f"The AppSecret of wx{'d' * 16} opens with no key of WXNOTIFY_ENCRYPTION_KEYS; nothing was changed."
    )
    assert stored_ciphertext("wx0000000000000001") == first


def test_rotation_reseals_cached_access_tokens(settings):
    old_key, new_key = encryption.generate_key(), encryption.generate_key()
    settings.WXNOTIFY_ENCRYPTION_KEYS = [old_key]
    (appid,) = make_accounts(1)
    now = time.time()
    entry = {"sealed": encryption.encrypt("TOKEN-BEFORE-ROTATION"), "expires_at": now + 3600, "fetched_at": now}
    cache.set(cache_key(appid), entry, 3600)
    settings.WXNOTIFY_ENCRYPTION_KEYS = [new_key, old_key]

    assert "and 1 cached access_token(s)" in rotate()

    sealed = cache.get(cache_key(appid))["sealed"]
    assert Fernet(new_key).decrypt(sealed.encode()) == b"TOKEN-BEFORE-ROTATION"


# --- End to end, as an operator does it, in processes that read the settings from the environment ---------------


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """manage.py with the real settings on a SQLite file of this test's own."""
    return run_manage_py(
        tmp_path,
        *args,
        DATABASE_URL=f"sqlite:///{tmp_path / 'rotation.sqlite3'}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        **env,
    )


READ_SECRET = "from accounts.models import OfficialAccount as A; print(A.objects.get().app_secret)"


@pytest.mark.slow
def test_rotating_secret_key_never_loses_an_app_secret(tmp_path):
    """Stored under the key derived in DEBUG from SECRET_KEY A; moved to a key of its own; SECRET_KEY becomes B."""
    debug_a = {"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": "secret-key-A-" + "a" * 40}
    assert manage(tmp_path, "migrate", "-v0", **debug_a).returncode == 0
    added = manage(
        tmp_path, "add_official_account", "--appid", "wx0123456789abcdef",
        **debug_a, WECHAT_APP_SECRET=SECRET, WECHAT_CALLBACK_TOKEN="callback-token",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    # Rotated carelessly, SECRET_KEY would take the AppSecret with it:
    careless = manage(tmp_path, "rotate_app_secrets", "--check", DJANGO_DEBUG="1", DJANGO_SECRET_KEY="secret-key-B")
    assert careless.returncode != 0
    assert "opens with no key of WXNOTIFY_ENCRYPTION_KEYS" in careless.stderr

    new_key = manage(tmp_path, "encryption_key", **debug_a).stdout.strip()
    production_a = {"DJANGO_SECRET_KEY": debug_a["DJANGO_SECRET_KEY"], "WXNOTIFY_ENCRYPTION_KEYS": new_key}
    derived = manage(tmp_path, "encryption_key", "--derived", **production_a).stdout.strip()
    assert derived == encryption.derived_key(debug_a["DJANGO_SECRET_KEY"])

    both = {**production_a, "WXNOTIFY_ENCRYPTION_KEYS": f"{new_key},{derived}"}
    rotated = manage(tmp_path, "rotate_app_secrets", **both)
    assert rotated.returncode == 0, rotated.stderr
    assert "Re-encrypted 1 AppSecret(s)" in rotated.stdout

    production_b = {"DJANGO_SECRET_KEY": "secret-key-B-" + "b" * 40, "WXNOTIFY_ENCRYPTION_KEYS": new_key}
    assert manage(tmp_path, "rotate_app_secrets", "--check", **production_b).returncode == 0
    read = manage(tmp_path, "shell", "-v", "0", "-c", READ_SECRET, **production_b)
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == SECRET
