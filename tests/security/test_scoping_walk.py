"""Scoping by construction: business staff of account A walk every admin page, API route and console page.

Two accounts get the same kinds of data through the real services and the sandbox WeChat (template and follower
syncs, a bound follower, a single message, a campaign with a failure, a delivery receipt). A's staff member then
visits everything ``tests.security.walk`` enumerates from the admin registry, the API router and the console
URLconf: no answer may show anything of B (its name, AppID, secrets, openids, template, campaign, users), B's objects
answer 404, and lists show exactly A's rows. A page added later is walked without editing this test; a model or
route the walk cannot place fails it by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import import_module
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from rest_framework import viewsets
from rest_framework.routers import SimpleRouter

from accounts.models import Follower, OfficialAccount
from accounts.selectors import STAFF_GROUP
from accounts.services import queue_follower_sync, read_access_token
from accounts.services.token_conflicts import record_token_conflict
from messaging import events
from messaging.api.urls import router as api_router
from messaging.console import urls as console_urls
from messaging.models import ApprovalPolicy, DeliveryReceipt, SendingCap
from messaging.services import create_campaign, send_message
from messaging.services.campaigns import RecipientSpec
from sandbox.demo import DEMO_APPID, DEMO_TEMPLATES
from subscriptions.services import record_change, record_popup
from templates_app.models import TemplateSync
from templates_app.services import sync_subscription_templates, sync_templates
from tests import factories
from tests.security import walk
from webhooks.models import Endpoint
from webhooks.urls import router as webhooks_router
from wxnotify.wechat.tokens import default_token_manager

pytestmark = pytest.mark.django_db

# Apps whose admin pages hold no official account's data, or data business staff must never see (users and groups,
# API tokens, sign-in attempts, the task queue): the walk asserts that staff are refused (403) each of their lists.
GLOBAL_ADMIN_APPS = {
    "audit": "the audit log of every account",
    "auth": "users and groups of every account",
    "authtoken": "every user's API tokens",
    "axes": "sign-in attempts",
    "django_q": "the task queue, whose arguments name accounts",
}
# Fewer pages than this means the walk lost a whole area (it visits several hundred).
MINIMUM_PAGES = 300
SEARCH = "Bravo"  # a part of B's names, openids and titles that no page shows as such

BRAVO_APPID = "wxb0b0b0b0b0b0b0b2"
BRAVO_SECRET = "bravo-app-secret-0123456789abcdef"
BRAVO_TOKEN = "bravotoken01"
BRAVO_AES_KEY = "BravoKey" * 5 + "123"
ORDER_CONTENT = DEMO_TEMPLATES[0]["content"]


def _openids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:0{28 - len(prefix)}d}" for n in range(1, count + 1)]


ALPHA = {
    "name": "Alpha Clinic",
    "followers": _openids("oAlphaFollower", 3),
    "stranger": _openids("oAlphaStranger", 1)[0],
    "template": {"template_id": "alpha-order-shipped-0001", "title": "Alpha order shipped", "content": ORDER_CONTENT},
    "subscription": {
        "pri_tmpl_id": "alpha-registration-sub-0001",
        "tid": 2304,
        "kid_list": [1, 6],
        "scene_desc": "挂号",
    },
    "campaign": "Alpha reminder campaign",
    "client_msg_id": "alpha-single-0001",
    "remark": "Alpha remark",
}
BRAVO = {
    "name": "Bravo Hospital",
    "followers": _openids("oBravoFollower", 2),
    "stranger": _openids("oBravoStranger", 1)[0],
    "template": {"template_id": "bravo-lab-results-0001", "title": "Bravo lab results ready", "content": ORDER_CONTENT},
    "subscription": {
        "pri_tmpl_id": "bravo-registration-sub-0001",
        "tid": 2304,
        "kid_list": [1, 6],
        "scene_desc": "挂号",
    },
    "campaign": "Bravo recall campaign",
    "client_msg_id": "bravo-single-0001",
    "remark": "Bravo remark",
}
# Whatever of account B would betray it, and what it is.
BRAVO_MARKERS = {
    BRAVO["name"]: "account B's name",
    BRAVO_APPID: "account B's AppID",
    BRAVO_SECRET: "account B's AppSecret",
    BRAVO_TOKEN: "account B's callback Token",
    BRAVO_AES_KEY: "account B's EncodingAESKey",
    **{openid: "an openid of account B" for openid in [*BRAVO["followers"], BRAVO["stranger"]]},
    BRAVO["template"]["title"]: "account B's template title",
    BRAVO["template"]["template_id"]: "account B's template_id",
    BRAVO["subscription"]["pri_tmpl_id"]: "account B's subscription template id",
    BRAVO["campaign"]: "account B's campaign",
    BRAVO["client_msg_id"]: "a client_msg_id of account B",
    BRAVO["remark"]: "a follower remark of account B",
    f"{BRAVO['name']} webhook secret": "account B's webhook signing secret",
    "bravo-staff": "account B's staff member",
    "bravo-patient": "a user bound to account B",
}


def business_staff_group() -> Group:
    """The group with exactly the permissions the data migrations give business staff."""
    accounts_groups = import_module("accounts.migrations.0003_permission_groups")
    messaging_groups = import_module("messaging.migrations.0002_messaging_permissions")
    webhooks_groups = import_module("webhooks.migrations.0002_webhook_permissions")
    subscription_groups = import_module("templates_app.migrations.0004_subscription_template_permissions")
    consent_groups = import_module("subscriptions.migrations.0002_consent_permissions")
    group, _ = Group.objects.get_or_create(name=STAFF_GROUP)
    group.permissions.set(
        [
            *(
                Permission.objects.get(content_type__app_label=app_label, codename=f"view_{model}")
                for app_label, model in accounts_groups.STAFF_VIEW_MODELS
            ),
            *Permission.objects.filter(
                content_type__app_label="messaging", codename__in=messaging_groups.STAFF_PERMISSIONS
            ),
            *Permission.objects.filter(
                content_type__app_label="webhooks", codename__in=webhooks_groups.STAFF_PERMISSIONS
            ),
            *Permission.objects.filter(
                content_type__app_label="templates_app", codename__in=subscription_groups.STAFF_CODENAMES
            ),
            *Permission.objects.filter(content_type__app_label="subscriptions", codename__in=consent_groups.CODENAMES),
        ]
    )
    return group


def every_view_permission_on_account_data() -> list[Permission]:
    """View permissions of every model that belongs to an account: what staff might be given beyond the group."""
    placed = [ct for ct in ContentType.objects.all() if ct.model_class() and walk.account_lookup(ct.model_class())]
    return list(Permission.objects.filter(content_type__in=placed, codename__startswith="view_"))


def populate(account: OfficialAccount, spec: dict[str, Any], staff: Any, customer: Any, capture: Any) -> None:
    """One account's data, made the way production makes it: syncs from WeChat (the sandbox), sends, a receipt, an
    approval policy, and the webhook events of the sends (their endpoint is refused at send time: loopback, not
    allow-listed)."""
    Endpoint.objects.create(
        owner=staff,
        account=account,
        url=f"https://127.0.0.1:9/{spec['client_msg_id']}",
        secret=f"{spec['name']} webhook secret",
        event_types=list(events.KINDS),
        description=f"{spec['name']} hooks",
    )
    sync_templates(account, source=TemplateSync.Source.ADMIN, requested_by=staff)
    sync_subscription_templates(account, source=TemplateSync.Source.ADMIN, requested_by=staff)
    queue_follower_sync(account, requested_by=staff)
    Follower.objects.filter(account=account, openid=spec["followers"][0]).update(user=customer, remark=spec["remark"])
    template_id = spec["template"]["template_id"]
    with capture(execute=True):
        send_message(
            account=account,
            template_id=template_id,
            data=factories.ORDER_DATA,
            user=customer,
            client_msg_id=spec["client_msg_id"],
            created_by=staff,
        )
        create_campaign(
            account=account,
            template_id=template_id,
            data=factories.ORDER_DATA,
            recipients=RecipientSpec.openids([*spec["followers"], spec["stranger"]]),
            name=spec["campaign"],
            created_by=staff,
        )
    # Set after the campaign, which it would otherwise hold back; it names another of the account's templates.
    policy = ApprovalPolicy.objects.create(account=account, recipient_threshold=1000)
    policy.templates.set(account.templates.exclude(template_id=template_id)[:1])
    SendingCap.objects.create(account=account, template=account.templates.get(template_id=template_id), limit=50)
    DeliveryReceipt.objects.create(
        account=account,
        msgid=9_000_000 + account.pk,
        openid=spec["followers"][-1],
        wechat_status="success",
        state=DeliveryReceipt.State.UNMATCHED,
    )
    # Consent: the stranger (no follower) accepted the subscription template twice, a follower refused it.
    accepted = [{"TemplateId": spec["subscription"]["pri_tmpl_id"], "SubscribeStatusString": "accept"}]
    record_popup(account, spec["stranger"], accepted * 2)
    record_change(account, spec["followers"][1], [{**accepted[0], "SubscribeStatusString": "reject"}])
    read_access_token(account=account, user=staff, address="203.0.113.7", min_ttl=0)
    record_token_conflict(None, appid=account.appid, errcode=40001)


@pytest.fixture
def two_accounts(
    sandbox_api: Any, fresh_demo_token: None, django_user_model: Any, django_capture_on_commit_callbacks: Any
) -> Iterator[tuple[OfficialAccount, OfficialAccount, Any]]:
    """Accounts A (the sandbox's demo AppID) and B with their data; yields A, B and A's staff member."""
    default_token_manager().forget(BRAVO_APPID)
    sandbox_api.update_account(
        DEMO_APPID,
        followers=ALPHA["followers"],
        templates=[ALPHA["template"]],
        subscription_templates=[ALPHA["subscription"]],
    )
    sandbox_api.add_account(
        appid=BRAVO_APPID,
        secret=BRAVO_SECRET,
        token=BRAVO_TOKEN,
        followers=BRAVO["followers"],
        templates=[BRAVO["template"]],
        subscription_templates=[BRAVO["subscription"]],
    )
    alpha = factories.create_demo_account(ALPHA["name"], message_mode=OfficialAccount.MessageMode.SAFE)
    bravo = OfficialAccount.objects.create(
        name=BRAVO["name"],
        appid=BRAVO_APPID,
        app_secret=BRAVO_SECRET,
        token=BRAVO_TOKEN,
        encoding_aes_key=BRAVO_AES_KEY,
        message_mode=OfficialAccount.MessageMode.SAFE,
    )
    group = business_staff_group()
    staff = {}
    for prefix, account, spec in (("alpha", alpha, ALPHA), ("bravo", bravo, BRAVO)):
        staff[prefix] = django_user_model.objects.create_user(f"{prefix}-staff", is_staff=True)
        staff[prefix].groups.add(group)
        account.operators.add(staff[prefix])
        customer = django_user_model.objects.create_user(f"{prefix}-patient")
        populate(account, spec, staff[prefix], customer, django_capture_on_commit_callbacks)
    yield alpha, bravo, staff["alpha"]
    default_token_manager().forget(BRAVO_APPID)


ROLES = ["business staff", "business staff with every view permission on account data"]


@pytest.mark.parametrize("role", ROLES)
def test_business_staff_see_nothing_of_another_account(two_accounts, role, record_property):
    own, other, staff = two_accounts
    if role == ROLES[1]:
        staff.user_permissions.add(*every_view_permission_on_account_data())
    client = factories.english_client(staff)
    walker = walk.Walk(client, BRAVO_MARKERS)
    own_template, other_template = own.templates.get(), other.templates.get()
    probes = [
        {"account": own.appid},
        {"account": own.appid, "template": str(own_template.pk)},
        {"account": other.appid},
        {"account": str(other.pk)},
        {"account": other.appid, "template": str(other_template.pk)},
        {"q": SEARCH},
    ]
    post_probes = [
        {"account": account.appid, "template": str(template.pk), "kind": "all_subscribed", "list": "", "data": {}}
        for account, template in ((own, own_template), (other, other_template))
    ]

    scoped, global_ = walk.place_admin_models(GLOBAL_ADMIN_APPS)
    shown = [
        model_admin.opts.label
        for model_admin in scoped
        if walk.walk_model_admin(walker, model_admin, own=own, other=other, search=SEARCH)
    ]
    for model_admin in global_:
        walk.walk_global_admin(walker, model_admin)
    autocompletes = walk.walk_autocomplete(walker, search=SEARCH)
    walk.walk_admin_site(walker, other=other, probes=probes)
    api_lists = walk.walk_api(walker, api_router, own=own, other=other)
    api_lists += walk.walk_api(walker, webhooks_router, own=own, other=other, namespace="webhooks")
    walk.walk_console(walker, console_urls, own=own, other=other, get_probes=probes, post_probes=post_probes)

    summary = (
        f"scoping walk as {role}: {len(walker.pages)} pages checked; admin lists shown {len(shown)}/{len(scoped)}, "
        f"refused {len(global_)} global; {autocompletes} autocomplete answers; {api_lists} API lists"
    )
    print(summary)
    record_property("pages_checked", len(walker.pages))
    assert len(walker.pages) >= MINIMUM_PAGES, summary
    assert api_lists == len(api_router.registry) + len(webhooks_router.registry), summary
    if role == ROLES[1]:
        assert len(shown) == len(scoped), summary


def test_an_admin_model_the_walk_cannot_place_fails_by_name():
    admin.site.register(ContentType)
    try:
        with pytest.raises(AssertionError, match=r"contenttypes\.ContentType"):
            walk.place_admin_models(GLOBAL_ADMIN_APPS)
    finally:
        admin.site.unregister(ContentType)


def test_an_api_route_the_walk_cannot_place_fails_by_name():
    class GroupViewSet(viewsets.ReadOnlyModelViewSet):
        queryset = Group.objects.none()

    router = SimpleRouter()
    router.register("groups", GroupViewSet, basename="group")
    own, other = OfficialAccount(name="A"), OfficialAccount(name="B")
    with pytest.raises(AssertionError, match=r"'groups' serves auth\.Group"):
        walk.walk_api(walk.Walk(factories.english_client(), BRAVO_MARKERS), router, own=own, other=other)
