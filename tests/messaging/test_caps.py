"""Sending caps (messaging.caps): N messages per user per day pass, the N+1st is capped or held, counted exactly.

Against the sandbox WeChat with tasks inline, like the pipeline tests: a capped message must never reach WeChat, so
the sandbox's send counter is part of every assertion.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import close_old_connections, connection

from messaging import caps
from messaging.models import CapCounter, Message, SendingCap
from messaging.services import CAPPED_HELD_REASON, CAPPED_REASON
from templates_app.models import MessageTemplate
from tests.factories import ORDER_TEMPLATE
from tests.messaging import test_pipeline
from tests.messaging.test_pipeline import refreshed, run_due_retries, send, slow_retries, stored_message

pipeline = test_pipeline.pipeline

TICKET_TEMPLATE = "sandbox-ticket-status-00000000000000000000003"


def order(number: int) -> dict[str, str]:
    """The order template's data with a number of its own, so no two messages say the same."""
    return {"character_string1": f"SO{number:04d}", "thing2": "键盘", "time3": "2026年12月07日 10:30", "amount4": "¥1"}


def ticket(number: int) -> dict[str, str]:
    return {"thing1": "巡检", "character_string2": f"T-{number}", "time3": "10:30"}


def cap(account, limit: int, *, template_id: str | None = None, action: str = SendingCap.Action.FAIL) -> SendingCap:
    template = MessageTemplate.objects.get(account=account, template_id=template_id) if template_id else None
    return SendingCap.objects.create(account=account, template=template, limit=limit, action=action)


def test_n_messages_pass_and_the_next_fails_capped_without_calling_wechat(pipeline, sandbox_api):
    cap(pipeline, 2)
    first, other = sandbox_api.followers()[:2]
    sent = [refreshed(send(pipeline, touser=first, data=order(n)).message) for n in range(3)]

    assert [m.status for m in sent] == [Message.Status.SENT, Message.Status.SENT, Message.Status.FAILED]
    assert (sent[2].errcode, sent[2].errmsg, sent[2].attempts) == (None, CAPPED_REASON, 1)
    assert sandbox_api.counters()["sends"] == 2
    assert len(sandbox_api.messages(touser=first)) == 2
    # Another user has a day of their own.
    assert refreshed(send(pipeline, touser=other, data=order(9)).message).status == Message.Status.SENT
    assert CapCounter.objects.get(openid=first).count == 2


def test_a_template_cap_counts_only_its_template_and_the_account_cap_counts_all(pipeline, sandbox_api):
    cap(pipeline, 1, template_id=ORDER_TEMPLATE)
    cap(pipeline, 3)
    openid = sandbox_api.followers()[0]
    results = [
        refreshed(send(pipeline, touser=openid, data=order(1)).message),
        refreshed(send(pipeline, touser=openid, data=order(2)).message),
        refreshed(send(pipeline, touser=openid, template_id=TICKET_TEMPLATE, data=ticket(1)).message),
        refreshed(send(pipeline, touser=openid, template_id=TICKET_TEMPLATE, data=ticket(2)).message),
        # Three went out today (the capped one took no permit): the all-templates cap refuses the next of either.
        refreshed(send(pipeline, touser=openid, template_id=TICKET_TEMPLATE, data=ticket(3)).message),
    ]
    assert [m.status for m in results] == [
        Message.Status.SENT,
        Message.Status.FAILED,
        Message.Status.SENT,
        Message.Status.SENT,
        Message.Status.FAILED,
    ]
    assert results[1].errmsg == results[4].errmsg == CAPPED_REASON
    assert sandbox_api.counters()["sends"] == 3


def test_a_refused_message_takes_no_permit_from_its_other_cap(pipeline, sandbox_api):
    """All-or-none: the template cap refuses, so the all-templates cap's count is left as it was."""
    cap(pipeline, 5)
    cap(pipeline, 1, template_id=ORDER_TEMPLATE)
    openid = sandbox_api.followers()[0]
    send(pipeline, touser=openid, data=order(1))
    assert refreshed(send(pipeline, touser=openid, data=order(2)).message).status == Message.Status.FAILED
    all_templates = SendingCap.objects.get(template__isnull=True)
    assert CapCounter.objects.get(cap=all_templates, openid=openid).count == 1


def test_a_retried_message_is_counted_once(pipeline, sandbox_api, settings):
    cap(pipeline, 1)
    slow_retries(settings)
    sandbox_api.set_faults(error_rate=1.0, error_code=-1)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert (message.status, message.attempts) == (Message.Status.QUEUED, 1)
    assert message.cap_day is not None

    sandbox_api.set_faults(error_rate=0.0)
    run_due_retries()
    message = refreshed(message)
    assert (message.status, message.attempts) == (Message.Status.SENT, 2)
    assert CapCounter.objects.get().count == 1


def test_held_to_the_next_day_waits_with_its_reason_and_goes_out_then(pipeline, sandbox_api):
    pipeline.time_zone = "America/New_York"
    pipeline.save()
    cap(pipeline, 1, action=SendingCap.Action.HOLD)
    openid = sandbox_api.followers()[0]
    send(pipeline, touser=openid, data=order(1))
    held = refreshed(send(pipeline, touser=openid, data=order(2)).message)

    assert (held.status, held.errmsg, held.attempts) == (Message.Status.QUEUED, CAPPED_HELD_REASON, 0)
    zone = ZoneInfo("America/New_York")
    today = held.attempted_at.astimezone(zone).date()
    assert held.next_attempt_at == datetime(today.year, today.month, today.day, tzinfo=zone) + timedelta(days=1)
    assert held.cap_day is None
    assert sandbox_api.counters()["sends"] == 1

    # The next day: today's count belongs to yesterday, and the held message is due.
    CapCounter.objects.update(day=today - timedelta(days=1))
    run_due_retries()
    held = refreshed(held)
    assert (held.status, held.cap_day) == (Message.Status.SENT, today)
    assert sandbox_api.counters()["sends"] == 2


@pytest.mark.django_db
def test_the_day_is_the_calendar_day_of_the_account_time_zone():
    shanghai, new_york = ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")
    # 15:59 and 16:01 UTC are the same UTC day but 23:59 and 00:01 in Shanghai.
    before, after = datetime(2026, 12, 7, 15, 59, tzinfo=UTC), datetime(2026, 12, 7, 16, 1, tzinfo=UTC)
    assert caps.account_day(shanghai, before) == date(2026, 12, 7)
    assert caps.account_day(shanghai, after) == date(2026, 12, 8)
    assert caps.account_day(new_york, after) == date(2026, 12, 7)
    assert caps.next_day_start(shanghai, date(2026, 12, 7)) == datetime(2026, 12, 7, 16, 0, tzinfo=UTC)
    # Across a daylight-saving change the next day still starts at local midnight.
    assert caps.next_day_start(new_york, date(2026, 3, 7)) == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    assert caps.next_day_start(new_york, date(2026, 3, 8)) == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)


def test_the_count_starts_again_at_midnight_in_the_account_zone(pipeline, sandbox_api):
    """Counted through the rules with a clock either side of Shanghai's midnight: a new day, a new count."""
    cap(pipeline, 1)
    openid = sandbox_api.followers()[0]
    messages = [stored_message(pipeline, openid, f"day-{n}") for n in range(3)]
    for message in messages:
        message.account = pipeline
    rules = caps.CapRules()
    late = datetime(2026, 12, 7, 15, 58, tzinfo=UTC)
    assert rules.apply(messages[:2], late).allowed == messages[:1]
    assert rules.apply(messages[2:], late + timedelta(minutes=3)).allowed == messages[2:]
    assert sorted(CapCounter.objects.values_list("day", "count")) == [(date(2026, 12, 7), 1), (date(2026, 12, 8), 1)]

    # The sweep deletes counters once their day has ended everywhere.
    assert caps.prune_counters(datetime(2026, 12, 10, 12, 0, tzinfo=UTC)) == 1
    assert list(CapCounter.objects.values_list("day", flat=True)) == [date(2026, 12, 8)]


def test_messages_racing_at_the_cap_from_many_threads_let_exactly_n_through(pipeline, sandbox_api):
    """Eight threads, each with its own database connection, count 24 messages to one user against a cap of 5 at
    once (the same conditional UPDATE the delivery tasks of several processes run): exactly 5 pass."""
    limit, threads, per_thread = 5, 8, 3
    cap(pipeline, limit)
    openid = sandbox_api.followers()[0]
    ids = [stored_message(pipeline, openid, f"race-{n}").pk for n in range(threads * per_thread)]
    barrier = threading.Barrier(threads)
    allowed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(chunk: list[int]) -> None:
        try:
            rules = caps.CapRules()
            messages = list(Message.objects.filter(pk__in=chunk).select_related("account"))
            barrier.wait(timeout=10)
            for message in messages:
                verdict = rules.apply([message])
                with lock:
                    allowed.extend(m.pk for m in verdict.allowed)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=worker, args=(ids[index::threads],)) for index in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    close_old_connections()

    assert not errors, errors
    assert len(allowed) == limit
    assert CapCounter.objects.get(openid=openid).count == limit
    assert Message.objects.filter(cap_day__isnull=False).count() == limit
