"""add_official_account takes the AppSecret, callback Token and EncodingAESKey off the command line.

From a prompt that does not echo (a real pseudo-terminal below), from ``NAME=value`` lines on stdin, or from the
environment; whatever the source, the values are registered for masking in logs and never printed.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from accounts.models import OfficialAccount
from wxnotify.log import MASK, redact

APPID = "wx00112233445566ff"
SECRET = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
TOKEN = "CallbackToken2024"
AES_KEY = "Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8L9z0X1c"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def add_account(*args: str, stdin: str | None = None, monkeypatch=None) -> str:
    out = StringIO()
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", StringIO(stdin))
    call_command("add_official_account", "--appid", APPID, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("WECHAT_APP_SECRET", SECRET)
    monkeypatch.setenv("WECHAT_CALLBACK_TOKEN", TOKEN)
    monkeypatch.setenv("WECHAT_ENCODING_AES_KEY", AES_KEY)

    out = add_account("--mode", "safe")

    account = OfficialAccount.objects.get(appid=APPID)
    assert (account.app_secret, account.token, account.encoding_aes_key) == (SECRET, TOKEN, AES_KEY)
    assert account.message_mode == "safe"
    assert not {SECRET, TOKEN, AES_KEY} & set(out.split())


def test_secrets_from_stdin_lines(monkeypatch):
    monkeypatch.delenv("WECHAT_APP_SECRET", raising=False)
    lines = f"# account wx00112233445566ff\nWECHAT_APP_SECRET={SECRET}\n\nWECHAT_CALLBACK_TOKEN = {TOKEN}\n"

    add_account("--secrets-from-stdin", stdin=lines, monkeypatch=monkeypatch)

    account = OfficialAccount.objects.get(appid=APPID)
    assert (account.app_secret, account.token, account.encoding_aes_key) == (SECRET, TOKEN, "")


def test_stdin_wins_over_the_environment_and_an_option_over_both(monkeypatch):
    monkeypatch.setenv("WECHAT_APP_SECRET", "f" * 32)
    monkeypatch.setenv("WECHAT_CALLBACK_TOKEN", "TokenFromEnvironment")
    lines = f"WECHAT_APP_SECRET={SECRET}\nWECHAT_CALLBACK_TOKEN=TokenFromStdin1\n"

    add_account("--secrets-from-stdin", "--token", TOKEN, stdin=lines, monkeypatch=monkeypatch)

    account = OfficialAccount.objects.get(appid=APPID)
    assert (account.app_secret, account.token) == (SECRET, TOKEN)


def test_a_bad_stdin_line_is_named_by_number_without_its_value(monkeypatch):
    lines = f"WECHAT_APP_SECRET={SECRET}\nAPP_SECRET={SECRET}\n"

    with pytest.raises(CommandError) as caught:
        add_account("--secrets-from-stdin", stdin=lines, monkeypatch=monkeypatch)

    assert "stdin line 2 is not NAME=value" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert not OfficialAccount.objects.exists()


def test_without_a_source_or_a_terminal_it_says_how_to_give_the_secret(monkeypatch):
    for name in ("WECHAT_APP_SECRET", "WECHAT_CALLBACK_TOKEN", "WECHAT_ENCODING_AES_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stdin", StringIO(""))

    with pytest.raises(CommandError) as caught:
        add_account()

    assert str(caught.value) == (
        "No AppSecret given. Type it at the prompt (run in a terminal), set WECHAT_APP_SECRET, or pass "
        "--secrets-from-stdin with a WECHAT_APP_SECRET=... line."
    )


def test_every_secret_taken_is_masked_in_logs(monkeypatch):
    secret, token, aes_key = "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "AnotherToken2025", "Z" * 21 + "y" * 22
    monkeypatch.setenv("WECHAT_APP_SECRET", secret)
    monkeypatch.setenv("WECHAT_CALLBACK_TOKEN", token)
    monkeypatch.setenv("WECHAT_ENCODING_AES_KEY", aes_key)

    add_account("--mode", "compatible")

    assert all(redact(value) == MASK for value in (secret, token, aes_key))
    assert redact(f"token={token} key {aes_key} secret {secret}") == f"token={MASK} key {MASK} secret {MASK}"


def test_loading_an_account_registers_its_secrets_for_masking():
    """A process that never ran the command (a web worker answering callbacks) masks them once it loads the row."""
    token, aes_key = "TokenOnlyInTheDatabase9", "K" * 20 + "m" * 23
    account = OfficialAccount.objects.create(appid=APPID, name="n", app_secret=SECRET, token="tok3n")
    # As another process would have written them: update() builds no instance here.
    OfficialAccount.objects.filter(pk=account.pk).update(token=token, encoding_aes_key=aes_key)
    assert redact(token) == token and redact(aes_key) == aes_key

    OfficialAccount.objects.get(appid=APPID)

    assert redact(token) == redact(aes_key) == redact(SECRET) == MASK


def read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} from the command; it wrote: {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            assert chunk, f"the command ended before {marker!r}; it wrote: {bytes(seen)!r}"
            seen.extend(chunk)


@pytest.mark.slow
def test_the_prompt_on_a_terminal_does_not_echo(tmp_path):
    """A real pseudo-terminal: what is typed at the prompts never appears on the screen."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "WXNOTIFY_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prompt.sqlite3'}",
    }
    for name in ("WECHAT_APP_SECRET", "WECHAT_CALLBACK_TOKEN", "WECHAT_ENCODING_AES_KEY", "REDIS_URL"):
        env.pop(name, None)
    manage = [sys.executable, str(django_settings.BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=120)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*manage, "add_official_account", "--appid", APPID, "--mode", "safe"],
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,  # no controlling terminal but this one, as for an operator's shell
    )
    os.close(terminal)
    screen = bytearray()
    try:
        for prompt, typed in (
            (b"AppSecret: ", SECRET),
            (b"callback Token: ", TOKEN),
            (b"keep the current one): ", AES_KEY),
        ):
            read_until(controller, prompt, screen)
            os.write(controller, typed.encode() + b"\n")
        read_until(controller, b"Callback URL for WeChat's console", screen)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)

    shown = bytes(screen)
    assert b"Created official account" in shown
    for typed in (SECRET, TOKEN, AES_KEY):
        assert typed.encode() not in shown
    check = subprocess.run(
        [*manage, "shell", "-v", "0", "-c",
         f"from accounts.models import OfficialAccount as A; a = A.objects.get(appid='{APPID}'); "
         f"print(a.app_secret == '{SECRET}', a.token == '{TOKEN}', a.encoding_aes_key == '{AES_KEY}')"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert check.stdout.split() == ["True", "True", "True"]
