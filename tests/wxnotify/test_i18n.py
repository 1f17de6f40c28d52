"""Our zh-hans catalogues are the ones Django uses for our strings.

Django merges every installed app's catalogue and the first app in INSTALLED_APPS that has a msgid wins. The
admin, auth, DRF and django_q come before our apps and translate plenty of the same English words their own way
(Filter → 过滤器, Created → 已创建), so a string of ours that collides needs a message context (pgettext). This
test compares every entry of our compiled catalogues with what the merged zh-hans translation returns.
"""

from __future__ import annotations

import gettext
import re
from pathlib import Path

import pytest
from django.apps import apps
from django.utils.translation import trans_real

OUR_APPS = [
    "operations",
    "wxnotify",
    "audit",
    "accounts",
    "templates_app",
    "subscriptions",
    "messaging",
    "callbacks",
    "sandbox",
]


def _catalogue(app_name: str) -> dict:
    """The entries of an app's compiled zh_Hans catalogue (keys: msgid, "context\\x04msgid" or (msgid, n))."""
    config = next(config for config in apps.get_app_configs() if config.name == app_name)
    with (Path(config.path) / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.mo").open("rb") as mo:
        return {key: text for key, text in gettext.GNUTranslations(mo)._catalog.items() if key != ""}


@pytest.mark.parametrize("app_name", OUR_APPS)
def test_no_other_catalogue_overrides_ours(app_name):
    ours = _catalogue(app_name)
    merged = trans_real.translation("zh-hans")._catalog

    overridden = {key: (text, merged[key]) for key, text in ours.items() if merged[key] != text}

    assert ours
    assert overridden == {}, "give these msgids a context (pgettext): {key: (ours, shown)}"


@pytest.mark.django_db
def test_the_admin_names_the_task_queue_in_the_admins_language(admin_client):
    """django_q's own name comes from a setting and is never translated; ours is (wxnotify.apps.TaskQueueConfig)."""
    chinese = admin_client.get("/admin/").content.decode()
    english = admin_client.get("/admin/", headers={"accept-language": "en"}).content.decode()

    assert "任务队列" in chinese and "Task queue" not in chinese
    assert "Task queue" in english


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "header", "title"),
    [("zh-hans", "wxnotify 管理", "wxnotify 管理后台"), ("en", "wxnotify administration", "wxnotify admin")],
)
def test_the_admin_is_named_after_the_product(admin_client, client, language, header, title):
    """Header and browser title name wxnotify on the index and on the sign-in page, in either language."""
    for page in (
        admin_client.get("/admin/", headers={"accept-language": language}),
        client.get("/admin/login/", headers={"accept-language": language}),
    ):
        html = page.content.decode()
        site_name = re.search(r'<div id="site-name"><a href="/admin/">(.*?)</a></div>', html, re.S)
        assert site_name is not None and site_name.group(1).strip() == header
        assert re.search(r"<title>(.*?)</title>", html, re.S).group(1).strip().endswith(f"| {title}")
