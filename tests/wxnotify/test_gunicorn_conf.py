"""gunicorn.conf.py: the web workers' shape, and start-up objects frozen out of full garbage collections."""

from __future__ import annotations

import gc
import runpy
from pathlib import Path

import django.urls
import pytest

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


@pytest.fixture
def conf() -> dict:
    return runpy.run_path(str(CONF))


def test_the_measured_shape(conf):
    assert (conf["workers"], conf["threads"]) == (2, 8)


def test_a_started_worker_freezes_what_start_up_loaded(conf, monkeypatch):
    frozen_when_imported: list[int] = []

    class Resolver:
        @property
        def url_patterns(self) -> list:
            frozen_when_imported.append(gc.get_freeze_count())
            return []

    monkeypatch.setattr(django.urls, "get_resolver", lambda: Resolver())
    before = gc.get_freeze_count()
    try:
        conf["post_worker_init"](worker=None)
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
    assert frozen_when_imported == [before], "the URLconf must be imported before the freeze"
