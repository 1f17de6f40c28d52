"""The staff console in a real browser: the path a business user takes, from signing in to a finished campaign.

The sandbox is the WeChat API (``sandbox_api``); tasks run inline, so delivery has happened when the send
request returns and the progress bar shows the final state.  Every step leaves a screenshot.
"""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from messaging.models import Campaign, Message
from sandbox.demo import DEMO_APPID
from subscriptions.models import SubscriptionConsent
from tests.messaging.test_console_subscriptions import HOLDER, STRANGER
from tests.messaging.test_subscription_campaigns import SHIPPED, SHIPPED_CONTENT, subscription_template

SHIPPED_TITLE = "订单发货通知"
VALUES = {
    "character_string1": "SO20261128001",
    "time3": "2026年11月28日 10:30",
    "amount4": "¥399.00",
}
TOO_LONG = "人体工学无线静音机械键盘套装豪华版含腕托盘"  # 21 characters; a thing takes 20
FIXED = "人体工学无线静音机械键盘套装豪华版含腕托"


def _sign_in(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/console/")
    expect(page).to_have_url(re.compile(r"/console/login/\?next="))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"pw-{username}")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Send a template message")).to_be_visible()


def test_staff_fill_preview_send_and_watch_a_campaign_finish(
    page: Page, browser: Browser, live_server, staff_a, staff_b, sandbox_followers, sandbox_api, shot
):
    base = live_server.url
    page.goto(f"{base}/console/")
    shot(page, "01-login")
    _sign_in(page, base, "staff_a")

    # The only account is chosen already; choosing the template reloads the page with its keywords.
    page.get_by_label("Template", exact=True).select_option(label=SHIPPED_TITLE)
    expect(page.locator("pre.template-content")).to_contain_text("商品名称:{{thing2.DATA}}")
    shot(page, "02-template")
    for name, value in VALUES.items():
        page.locator(f"#id_kw_{name}").fill(value)

    # Typing an over-long value: the counter turns red and the validator's message appears as they type.
    thing = page.get_by_label(re.compile("商品名称"))
    thing.fill(TOO_LONG)
    expect(page.locator('[data-counter="thing2"]')).to_have_text("21 / 20 characters")
    expect(page.locator('[data-counter="thing2"]')).to_have_class(re.compile(r"\bover\b"))
    expect(page.locator('[data-errors="thing2"]')).to_have_text("At most 20 characters (this has 21).")
    expect(thing).to_have_attribute("aria-invalid", "true")
    shot(page, "03-validation-error")

    thing.fill(FIXED)
    expect(page.locator('[data-counter="thing2"]')).to_have_text("20 / 20 characters")
    expect(page.locator('[data-errors="thing2"] li')).to_have_count(0)
    expect(thing).to_have_attribute("aria-invalid", "false")

    page.get_by_label("Web page").check()
    page.get_by_label("Link URL").fill("https://example.com/orders/SO20261128001")
    page.get_by_label("All subscribed followers").check()
    expect(page.locator("#recipient-count")).to_have_text("Recipients: 6.")
    page.get_by_label("Campaign name").fill("Shipping notice")

    page.get_by_role("button", name="Preview").click()
    card = page.get_by_test_id("preview-card")
    expect(card).to_contain_text(SHIPPED_TITLE)
    expect(card.locator(".card-line", has_text="商品名称")).to_contain_text(FIXED)
    expect(card.locator(".card-line", has_text="订单金额")).to_contain_text("¥399.00")
    expect(card.locator(".card-link")).to_contain_text("详情")
    expect(page.locator("#recipient-count")).to_have_text("Recipients: 6.")
    shot(page, "04-preview")
    assert not Campaign.objects.exists()

    page.get_by_role("button", name="Send", exact=True).click()
    expect(page).to_have_url(re.compile(r"/console/campaigns/\d+/$"))
    campaign = Campaign.objects.get()
    progressbar = page.get_by_role("progressbar")
    expect(progressbar).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#progress-percent")).to_have_text("100%")
    expect(page.locator("#campaign-state")).to_have_text("Done")
    counts = {status: Message.objects.filter(campaign=campaign, status=status).count() for status in Message.Status}
    assert counts[Message.Status.SENT] == 6
    for status, count in counts.items():
        expect(page.locator(f'td[data-status="{status}"]')).to_have_text(str(count))
    expect(page.locator("#progress-done")).to_have_text("6")
    expect(page.locator("#no-failures")).to_be_visible()
    shot(page, "05-progress-done")
    assert sorted(message["touser"] for message in sandbox_api.messages(DEMO_APPID)) == sorted(
        follower.openid for follower in sandbox_followers
    )
    assert sandbox_api.messages(DEMO_APPID)[0]["data"]["thing2"]["value"] == FIXED

    page.get_by_role("link", name="History").first.click()
    expect(page.locator("#history-campaigns")).to_contain_text("Shipping notice")
    shot(page, "06-history")

    # A staff user of another account sees neither the campaign nor its progress.
    other = browser.new_context(locale="en-US")
    other_page = other.new_page()
    _sign_in(other_page, base, "staff_b")
    response = other_page.goto(f"{base}/console/campaigns/{campaign.pk}/")
    assert response is not None
    assert response.status == 404
    shot(other_page, "07-other-account-404")
    assert other_page.request.get(f"{base}/console/campaigns/{campaign.pk}/progress/").status == 404
    other_page.goto(f"{base}/console/history/")
    expect(other_page.locator("#history-campaigns")).not_to_contain_text("Shipping notice")
    expect(other_page.locator("#history-campaigns")).to_contain_text("No campaigns match.")
    other.close()


def test_progress_bar_updates_by_itself_until_done(page: Page, live_server, staff_a, account_a, shot):
    """A campaign still running when the page opens: polling moves the bar as messages finish, then stops."""
    template = account_a.templates.get(title=SHIPPED_TITLE)
    campaign = Campaign.objects.create(
        account=account_a,
        template=template,
        data={"thing2": {"value": "键盘"}},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        recipient_count=4,
        state=Campaign.State.RUNNING,
    )
    for index in range(4):
        Message.objects.create(
            account=account_a,
            template=template,
            template_id_sent=template.template_id,
            touser=f"oRunning{index}",
            client_msg_id=f"c{campaign.pk}-{index}",
            campaign=campaign,
            status=Message.Status.SENT if index == 0 else Message.Status.QUEUED,
        )
    _sign_in(page, live_server.url, "staff_a")
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/")
    progressbar = page.get_by_role("progressbar")
    expect(progressbar).to_have_attribute("aria-valuenow", "25")
    expect(page.locator("#cancel-form")).to_be_visible()
    shot(page, "01-running")

    Message.objects.filter(campaign=campaign, touser="oRunning1").update(status=Message.Status.SENT)
    expect(progressbar).to_have_attribute("aria-valuenow", "50")
    Message.objects.filter(campaign=campaign, touser="oRunning2").update(status=Message.Status.DELIVERED)
    Message.objects.filter(campaign=campaign, touser="oRunning3").update(status=Message.Status.FAILED, errcode=43004)
    Campaign.objects.filter(pk=campaign.pk).update(state=Campaign.State.DONE)
    expect(progressbar).to_have_attribute("aria-valuenow", "100")
    expect(page.locator('td[data-status="failed"]')).to_have_text("1")
    expect(page.locator("#failures")).to_contain_text("oRunning3")
    expect(page.locator("#failures")).to_contain_text("43004")
    expect(page.locator("#cancel-form")).to_be_hidden()
    expect(page.locator("#retry-form")).to_be_visible()
    expect(page.locator("#campaign-state")).to_have_text("Done")
    shot(page, "02-done-with-a-failure")


def test_search_adds_a_follower_and_the_count_follows(page: Page, live_server, staff_a, sandbox_followers, shot):
    target = sandbox_followers[2].openid
    _sign_in(page, live_server.url, "staff_a")
    page.get_by_label("Template", exact=True).select_option(label=SHIPPED_TITLE)
    page.get_by_label("These openids").check()
    page.get_by_label(re.compile("Search followers")).fill(target[:12])
    result = page.locator("#follower-results li", has_text=target)
    expect(result).to_be_visible()
    result.get_by_role("button", name="Add").click()
    expect(page.get_by_label("Openids or usernames")).to_have_value(target)
    expect(page.locator("#recipient-count")).to_have_text("Recipients: 1.")
    page.get_by_label("Openids or usernames").fill(f"{target}\noUnknownOpenid")
    expect(page.locator("#recipient-count")).to_contain_text("Recipients: 2.")
    expect(page.locator("#recipient-count")).to_contain_text("oUnknownOpenid")
    shot(page, "01-search-and-count")


def test_chinese_ui_at_phone_width(browser: Browser, live_server, staff_a, sandbox_followers, shot):
    context = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{live_server.url}/console/login/")
    page.get_by_label("用户名").fill("staff_a")
    page.get_by_label("密码").fill("pw-staff_a")
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("heading", name="发送模板消息")).to_be_visible()
    page.get_by_label("模板", exact=True).select_option(label=SHIPPED_TITLE)
    expect(page.locator('[data-counter="thing2"]')).to_have_text("0 / 20 个字符")
    # Nothing is wider than the phone: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "01-compose-phone")

    page.get_by_label("语言").select_option("en")
    page.get_by_role("button", name="切换").click()
    expect(page.get_by_role("heading", name="Send a template message")).to_be_visible()
    context.close()


def test_subscribe_channel_checks_keywords_counts_credits_and_previews_the_service_card(
    page: Page, live_server, staff_a, account_a, shot
):
    """Staff pick the subscription channel: its template's fields are checked as they type, the pasted list says who
    holds the subscription, and the preview is the 服务通知 card."""
    subscription_template(account_a, SHIPPED, SHIPPED_CONTENT, "订单发货提醒")
    SubscriptionConsent.objects.create(account=account_a, openid=HOLDER, pri_tmpl_id=SHIPPED, credits=1)
    _sign_in(page, live_server.url, "staff_a")
    page.get_by_label("Channel").select_option("subscribe")
    expect(page.get_by_role("heading", name="Send a subscription notification")).to_be_visible()
    # The account's only subscription template is chosen already.
    expect(page.locator("pre.template-content")).to_contain_text("商品名称:{{thing2.DATA}}")
    for name, value in VALUES.items():
        page.locator(f"#id_kw_{name}").fill(value)
    thing = page.get_by_label(re.compile("商品名称"))
    thing.fill(TOO_LONG)
    expect(page.locator('[data-errors="thing2"]')).to_have_text("At most 20 characters (this has 21).")
    thing.fill(FIXED)
    expect(page.locator('[data-errors="thing2"] li')).to_have_count(0)

    page.get_by_label("These openids").check()
    page.get_by_label("Openids or usernames").fill(f"{HOLDER}\n{STRANGER}")
    expect(page.locator("#recipient-count")).to_contain_text("Recipients: 2.")
    expect(page.locator("#recipient-count")).to_contain_text("1 of them hold the subscription")
    expect(page.locator(f'#recipient-credits li[data-openid="{HOLDER}"]')).to_have_class("holds")
    expect(page.locator(f'#recipient-credits li[data-openid="{STRANGER}"]')).to_have_class("no-credit")
    page.get_by_label("Web page").check()
    page.get_by_label("Link URL").fill("https://example.com/orders/SO20261128001")
    shot(page, "01-subscribe-compose")

    page.get_by_role("button", name="Preview").click()
    card = page.get_by_test_id("service-card")
    expect(card).to_contain_text("订单发货提醒")
    expect(card.locator(".card-line", has_text="商品名称")).to_contain_text(FIXED)
    expect(card.locator(".card-link")).to_contain_text("查看详情")
    expect(page.locator(".service-header")).to_have_text("服务通知")
    shot(page, "02-service-card")
    assert not Campaign.objects.exists()
