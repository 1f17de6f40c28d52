"""The operations dashboard in a real browser (Playwright driving Debian's chromium), with screenshots.

A superuser logs in through the admin's login form, follows the link on the admin index and sees the dashboard
with messages sent through the sandbox WeChat. Screenshots go to ``test-artifacts/dashboard/``; the README's
``docs/screenshots/dashboard*.png`` are copies of them.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone
from playwright.sync_api import sync_playwright

from accounts.models import Follower, OfficialAccount
from messaging.models import Campaign, Message
from messaging.services import RecipientSpec, create_campaign
from sandbox.demo import DEMO_ACCOUNT
from templates_app.models import MessageTemplate
from tests.chromium import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.factories import ORDER_DATA, create_demo_account, create_templates

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"

pytestmark = pytest.mark.browser


@pytest.fixture
def chromium(monkeypatch):
    """Debian's chromium through Playwright; Django's ORM may run beside Playwright's event loop in this thread."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
        # Beside Playwright's loop the ORM works on connections of this context, not pytest-django's: close them, or
        # the test database cannot be dropped at the end of the run.
        connections.close_all()


@pytest.fixture
def operations(transactional_db, sandbox_api, django_user_model, fresh_demo_token):
    """A day of traffic: a campaign sent through the sandbox (some recipients refused) and older messages."""
    account = create_demo_account("演示商城")
    templates = create_templates(account)
    Follower.objects.bulk_create([Follower(account=account, openid=openid) for openid in sandbox_api.followers()])
    sandbox_api.set_faults(error_rate=0.2, error_code=43101)
    create_campaign(
        account=account,
        template_id=templates[0].template_id,
        data=ORDER_DATA,
        recipients=RecipientSpec(Campaign.RecipientKind.ALL_SUBSCRIBED),
        name="双十一发货通知",
    )
    clinic = OfficialAccount.objects.create(
        name="示例诊所", appid="wx00000000000000b2", app_secret="s" * 32, token="t", last_error_code=48001
    )
    OfficialAccount.objects.filter(pk=clinic.pk).update(
        last_error_message="api unauthorized", last_error_at=timezone.now() - timedelta(minutes=12)
    )
    broken = MessageTemplate.objects.create(
        account=clinic,
        template_id="tpl-booking",
        title="预约成功提醒",
        content="{{thing1.DATA}}",
        problem_code=40037,
        problem_message="invalid template_id",
        problem_at=timezone.now() - timedelta(minutes=30),
    )
    rng = random.Random(6)
    now = timezone.now()
    history = []
    for hour in range(1, 24):
        for index in range(rng.randint(2, 14)):
            created = now - timedelta(hours=hour, minutes=rng.randint(0, 59))
            status = rng.choice([Message.Status.DELIVERED] * 6 + [Message.Status.SENT] * 3 + [Message.Status.FAILED])
            history.append(
                Message(
                    account=account if index % 3 else clinic,
                    template=templates[1] if index % 3 else broken,
                    template_id_sent="history",
                    touser=f"o-history-{hour}-{index}",
                    client_msg_id=f"history-{hour}-{index}",
                    status=status,
                    errcode=rng.choice([43101, 40003, 45009]) if status == Message.Status.FAILED else None,
                    sent_at=None if status == Message.Status.FAILED else created + timedelta(seconds=2),
                )
            )
    Message.objects.bulk_create(history)
    for message in history:
        Message.objects.filter(pk=message.pk).update(created_at=message.sent_at or now - timedelta(hours=3))
    Message.objects.bulk_create(
        [
            Message(
                account=clinic,
                template=broken,
                template_id_sent="queued",
                touser=f"o-queued-{index}",
                client_msg_id=f"queued-{index}",
            )
            for index in range(7)
        ]
    )
    django_user_model.objects.create_superuser("ops", "ops@example.com", "correct horse battery")
    return account


@pytest.mark.slow
@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_a_superuser_opens_the_dashboard_from_the_admin_index(live_server, chromium, operations, locale):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.click("a[href='/admin/ops/dashboard/'] >> nth=0")
    page.wait_for_selector("#ops-accounts")

    first_hour = timezone.localtime().replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    sent = Message.objects.filter(sent_at__gte=first_hour).count()
    failed_24h = Message.objects.filter(
        status=Message.Status.FAILED, created_at__gte=timezone.now() - timedelta(hours=24)
    ).count()
    assert page.locator("td[data-window='1'][data-status='failed']").inner_text() == str(failed_24h)
    bars = page.locator("svg.ops-chart rect.bar")
    assert bars.count() == 24
    assert sum(int(bars.nth(i).get_attribute("data-count")) for i in range(24)) == sent
    assert page.locator("tr[data-appid='wx00000000000000b2'] td[data-field='queued']").inner_text() == "7"
    heading = "运营看板" if locale == "zh-CN" else "Operations dashboard"
    assert page.locator("#content h1").inner_text() == heading
    assert DEMO_ACCOUNT["secret"] not in page.content()
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{locale}.png"), full_page=True)
    context.close()
