"""Test settings: the real settings with tasks run inline and a fast password hasher."""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("WXNOTIFY_TASKS_SYNC", "1")
os.environ.setdefault("WECHAT_API_BASE", "http://127.0.0.1:9")

from wxnotify.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Concurrent test runs on one machine must not share a SQLite test database file.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": VAR_DIR / f"test-wxnotify-{os.getpid()}.sqlite3"}  # noqa: F405
