"""Plain helpers that build the objects many tests need, for the fixtures in ``tests/conftest.py`` and for tests
that need a variant of them (another name, message mode or set of templates).

The demo account is the sandbox's (``sandbox.demo.DEMO_ACCOUNT``), so a client built for it fetches real tokens
from the sandbox WeChat; account "B" exists on our side only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from django.contrib.auth.models import Group, Permission
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import OfficialAccount
from accounts.selectors import STAFF_GROUP
from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID, DEMO_TEMPLATES
from templates_app.keywords import parse_keywords
from templates_app.models import MessageTemplate

OTHER_APPID = "wx00000000000000b2"
# Valid data for the demo's first template (character_string1, thing2, time3, amount4): "order shipped".
ORDER_TEMPLATE = DEMO_TEMPLATES[0]["template_id"]
ORDER_DATA = {
    "character_string1": "SO20261128001",
    "thing2": "机械键盘",
    "time3": "2026年11月28日 10:30",
    "amount4": "¥399.00",
}
# What the data migrations give the business staff group (accounts 0003, messaging 0002, webhooks 0002,
# templates_app 0004).
STAFF_PERMISSIONS = (
    "view_officialaccount",
    "view_follower",
    "view_messagetemplate",
    "view_subscriptiontemplate",
    "view_subscriptionconsent",
    "view_message",
    "add_message",
    "view_campaign",
    "add_campaign",
    "view_deliveryreceipt",
    "view_endpoint",
    "add_endpoint",
    "change_endpoint",
    "delete_endpoint",
    "view_delivery",
)


def create_template(account: OfficialAccount, spec: Mapping[str, str]) -> MessageTemplate:
    """A template as the sync stores it from WeChat's list entry ``spec``: keywords parsed from its content."""
    return MessageTemplate.objects.create(
        account=account,
        template_id=spec["template_id"],
        title=spec["title"],
        content=spec["content"],
        example=spec.get("example", ""),
        keywords=[keyword.as_dict() for keyword in parse_keywords(spec["content"])],
    )


def create_templates(
    account: OfficialAccount, specs: Iterable[Mapping[str, str]] = DEMO_TEMPLATES
) -> list[MessageTemplate]:
    return [create_template(account, spec) for spec in specs]


def create_demo_account(name: str = "Demo", **fields: Any) -> OfficialAccount:
    """The sandbox's demo account registered on our side (no templates: tests add or sync them)."""
    return OfficialAccount.objects.create(
        name=name,
        appid=DEMO_APPID,
        app_secret=DEMO_ACCOUNT["secret"],
        token=DEMO_ACCOUNT["token"],
        encoding_aes_key=DEMO_ACCOUNT["encoding_aes_key"],
        **fields,
    )


def create_account_b() -> OfficialAccount:
    """A second account, unknown to the sandbox, with the demo's first template: for per-account boundaries."""
    account = OfficialAccount.objects.create(name="Other B", appid=OTHER_APPID, app_secret="b" * 32, token="tokenb")
    create_template(account, DEMO_TEMPLATES[0])
    return account


def ensure_staff_group() -> Group:
    """The business staff group of the data migrations.

    Transactional tests empty the database when they finish and data migrations do not run again, so a later
    transactional test re-creates the group with the same permissions; every other test gets the migrated one.
    """
    group, created = Group.objects.get_or_create(name=STAFF_GROUP)
    if created:
        group.permissions.add(*Permission.objects.filter(codename__in=STAFF_PERMISSIONS))
    return group


def create_staff(django_user_model: Any, name: str, group: Group, account: OfficialAccount) -> Any:
    """A user in ``group`` who operates ``account``; the password is ``pw-<name>``, for login forms."""
    user = django_user_model.objects.create_user(name, password=f"pw-{name}")
    user.groups.add(group)
    account.operators.add(user)
    return user


def english_client(user: Any = None) -> Client:
    """A test client asking for English pages (assertions read the source strings), logged in as ``user``."""
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    if user is not None:
        client.force_login(user)
    return client


def api_client_for(user: Any) -> APIClient:
    """An API client with ``user``'s token, asking for English answers (assertions read the source strings)."""
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


BASE_DIR = Path(__file__).resolve().parent.parent


def run_manage_py(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``manage.py`` as an operator runs it: no DJANGO_SETTINGS_MODULE, only the given variables."""
    clean_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "WXNOTIFY_VAR_DIR": str(tmp_path / "var"),
        **env,
    }
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        cwd=BASE_DIR,
        env=clean_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
