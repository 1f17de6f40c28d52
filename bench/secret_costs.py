"""What encrypting cached access_tokens and masking secrets in logs cost, per operation.

The send path asks the token manager for a token once per WeChat call.  That is served from the in-process memo; the
shared cache, where the token is now stored encrypted, is read (and the token decrypted) only on a memo miss, at most
every ``MEMO_TTL`` seconds per account and process.  This benchmark times each step in one process with the
production settings (DEBUG off, a key of its own):

- ``get_token`` served from the memo (what every send pays);
- a raw ``cache.get`` of the entry, and ``peek`` (the same read plus Fernet decryption and registering the token
  for masking), whose difference is the cost of the encryption on a memo miss;
- Fernet encryption and decryption of a token alone;
- ``redact`` of one ordinary log line with 16, 256 and 1024 values registered for masking (1024 is the bound).

Runs on SQLite and the database cache in a temporary directory, or on what ``DATABASE_URL`` / ``REDIS_URL`` name
(its cache entries are its own keys, deleted at the end; nothing is flushed).  Replaces its section of
``bench/RESULTS.md`` (``--no-results`` prints only)::

    .venv/bin/python bench/secret_costs.py
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/wx_sec REDIS_URL=redis://127.0.0.1:6379/5 \\
        .venv/bin/python bench/secret_costs.py
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench._stack import load_average, setup_django, write_results_section  # noqa: E402 -- needs the project path

TITLE = "## Secret handling costs"
LOG_LINE = (
    "2026-11-30 10:00:00,123 INFO wxnotify.messaging 4242 [3f2a9c1e] Sent message 123456 to "
    "oAbCdEfGhIjKlMnOpQrStUvWxYz0 for wx0123456789abcdef (template TM00001) in 52 ms"
)


def best_microseconds(operation: Callable[[], object], number: int, repeat: int = 5) -> float:
    """The best of ``repeat`` timings of ``number`` calls, in microseconds per call (the machine is shared)."""
    return min(timeit.repeat(operation, number=number, repeat=repeat)) / number * 1e6


def measure() -> tuple[list[tuple[str, float]], str]:
    from django.conf import settings
    from django.core.cache import cache
    from django.core.management import call_command

    from wxnotify import encryption
    from wxnotify.log import MAX_REGISTERED_SECRETS, redact, register_secret
    from wxnotify.wechat.client import AccessToken, Credentials, WeChatClient
    from wxnotify.wechat.tokens import AccessTokenManager, cache_key

    if settings.CACHES["default"]["BACKEND"].endswith("DatabaseCache"):
        call_command("createcachetable", verbosity=0)
    appid = "wx" + secrets.token_hex(8)
    manager = AccessTokenManager()
    client = WeChatClient(Credentials(appid=appid, secret=secrets.token_hex(16)), token_manager=manager)
    now = time.time()
    token = AccessToken(value=secrets.token_urlsafe(100), expires_at=now + 7000, fetched_at=now)
    manager._store(appid, token)
    manager._remember(appid, token)
    sealed = cache.get(cache_key(appid))["sealed"]
    rows: list[tuple[str, float]] = []
    try:
        rows.append(
            ("get_token from the memo (every send)", best_microseconds(lambda: manager.get_token(client), 20000))
        )
        # Interleaved, many rounds: a database cache read varies by tens of microseconds on a shared machine.
        raw, peeked = [], []
        for _ in range(15):
            raw.append(best_microseconds(lambda: cache.get(cache_key(appid)), 300, repeat=1))
            peeked.append(best_microseconds(lambda: manager.peek(appid), 300, repeat=1))
        rows.append(("cache.get of the entry (raw read)", min(raw)))
        rows.append(("peek: read + decrypt + register (memo miss)", min(peeked)))
        rows.append(("Fernet decrypt of a token", best_microseconds(lambda: encryption.decrypt(sealed), 5000)))
        rows.append(("Fernet encrypt of a token", best_microseconds(lambda: encryption.encrypt(token.value), 5000)))
        registered = 0
        for size in (1, 16, 256, MAX_REGISTERED_SECRETS):
            while registered < size:
                register_secret(secrets.token_urlsafe(32))
                registered += 1
            rows.append(
                (f"redact one log line, {size} value(s) registered", best_microseconds(lambda: redact(LOG_LINE), 2000))
            )
    finally:
        cache.delete(cache_key(appid))
    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    backend = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    return rows, f"{database} database, {backend} (`{settings.CACHES['default']['LOCATION']}`)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-results", action="store_true", help="print only; leave bench/RESULTS.md alone")
    arguments = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-secrets-")
    env = {
        "DJANGO_SETTINGS_MODULE": "wxnotify.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "WXNOTIFY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "WXNOTIFY_VAR_DIR": workdir,
        "PROMETHEUS_MULTIPROC_DIR": os.path.join(workdir, "metrics"),
        "WXNOTIFY_LOG_LEVEL": "WARNING",
    }
    started_load = load_average()
    setup_django(env)
    rows, stack = measure()
    command = "DATABASE_URL=… REDIS_URL=… " if os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL") else ""
    lines = [
        f"{TITLE} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}.venv/bin/python bench/secret_costs.py`",
        "",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, shared with other work; load average "
        f"(1/5/15 min) {started_load} at start, {load_average()} at end. Stack: {stack}; DEBUG off, one key of its "
        "own. Best of 5 timings, one thread.",
        "",
        "| operation | µs per call |",
        "|---|---:|",
        *(f"| {name} | {value:.1f} |" for name, value in rows),
        "",
        "Each send pays only the memo read. The encryption adds the difference between `peek` and the raw read, "
        "once per account and process on a memo miss (at most every 30 s), and one encryption per token fetch.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not arguments.no_results:
        write_results_section(TITLE, text)


if __name__ == "__main__":
    main()
