"""Delivering the outbox: fan events out to endpoints, claim due deliveries, post them signed, write outcomes back.

At least once: a delivery is marked delivered only after its endpoint answered 2xx, and a worker that dies mid-post
leaves a lease that runs out, after which the delivery is claimed again.  Receivers de-duplicate by the event id
(``X-Wxnotify-Event-Id``), which a retry or a replay repeats.

In order per message: a delivery is claimed only when no earlier event of the same subject (message or campaign) is
still pending for that endpoint, so "sent" reaches a receiver before "delivered" even when "sent" needed retries;
an event given up on (after ``WXNOTIFY_WEBHOOK_RETRY_HOURS``) no longer holds the next one back.

A failed attempt is retried after an exponential backoff (``WXNOTIFY_WEBHOOK_RETRY_BASE_SECONDS`` doubling up to
``WXNOTIFY_WEBHOOK_RETRY_MAX_SECONDS``, half of it random so the retries of a receiver's outage spread out).
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from accounts.models import OfficialAccount
from accounts.selectors import accounts_for_user
from webhooks import signing, transport
from webhooks.models import Delivery, Endpoint, Event

logger = logging.getLogger("wxnotify.webhooks")

FAN_OUT_BATCH = 1000
# A claimed batch is posted by WXNOTIFY_WEBHOOK_CONCURRENCY threads; its lease outlasts the batch even when every
# receiver keeps us waiting until the timeout.
CLAIM_BATCHES_PER_THREAD = 4
LEASE_SECONDS = 120
USER_AGENT = "wxnotify-webhooks/1"
# Set by write_back from each outcome, in this order (attempts, the claim and the lease by the statement itself).
_OUTCOME_COLUMNS = (
    "state",
    "last_attempt_at",
    "last_status_code",
    "latency_ms",
    "last_error",
    "delivered_at",
    "next_attempt_at",
)


def fan_out(*, now: datetime, limit: int = FAN_OUT_BATCH) -> int:
    """Create a delivery per subscribing endpoint for the oldest events not yet handed out; returns events handled.

    Two workers doing it at once create each delivery once (unique endpoint + event).  An endpoint whose owner was
    deactivated or may no longer use its account gets nothing.
    """
    batch = list(Event.objects.filter(fanned_out=False).order_by("pk")[:limit])
    if not batch:
        return 0
    endpoints = _usable_endpoints({event.account_id for event in batch})
    window = timedelta(hours=settings.WXNOTIFY_WEBHOOK_RETRY_HOURS)
    rows = [
        Delivery(
            endpoint=endpoint,
            event=event,
            subject=event.subject,
            next_attempt_at=now,
            retry_until=event.occurred_at + window,
        )
        for event in batch
        for endpoint in endpoints.get(event.account_id, ())
        if event.kind in endpoint.event_types
    ]
    with transaction.atomic():
        Delivery.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
        Event.objects.filter(pk__in=[event.pk for event in batch]).update(fanned_out=True)
    return len(batch)


def _usable_endpoints(account_ids: set[int]) -> dict[int, list[Endpoint]]:
    found: dict[int, list[Endpoint]] = {}
    owners: dict[int, set[int]] = {}
    users = get_user_model()
    for endpoint in Endpoint.objects.filter(active=True, account_id__in=account_ids):
        if endpoint.owner_id not in owners:
            owner = users.objects.filter(pk=endpoint.owner_id).first()
            owners[endpoint.owner_id] = set(accounts_for_user(owner).values_list("pk", flat=True)) if owner else set()
        if endpoint.account_id in owners[endpoint.owner_id]:
            found.setdefault(endpoint.account_id, []).append(endpoint)
    return found


def claim(*, now: datetime, token: str, limit: int) -> list[Delivery]:
    """Lease due deliveries whose subject has no earlier pending event for their endpoint, oldest event first.

    Each comes with its endpoint, and its event with ``appid``, the AppID of its account (for the body).
    """
    first_pending = Delivery.objects.filter(
        endpoint=OuterRef("endpoint"), subject=OuterRef("subject"), state=Delivery.State.PENDING
    ).order_by("event_id")
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    # The earliest pending event of its subject, looked up per candidate (one probe of webhook_delivery_order): a
    # NOT EXISTS over the pending rows was planned as a scan of all of them per candidate on a freshly grown table.
    ids = list(
        Delivery.objects.filter(free, state=Delivery.State.PENDING, next_attempt_at__lte=now)
        .filter(event_id=Subquery(first_pending.values("event_id")[:1]))
        .order_by("event_id")
        .values_list("pk", flat=True)[:limit]
    )
    if not ids:
        return []
    Delivery.objects.filter(free, pk__in=ids, state=Delivery.State.PENDING).update(
        claim_token=token, lease_expires_at=now + timedelta(seconds=LEASE_SECONDS)
    )
    batch = list(
        Delivery.objects.filter(pk__in=ids, claim_token=token, state=Delivery.State.PENDING)
        .select_related("event")
        .order_by("event_id")
    )
    # Each endpoint (its secret decrypted) and each account's AppID once per batch, not once per row; the account row
    # itself is not loaded, so none of its secrets is decrypted for nothing.
    endpoints = Endpoint.objects.in_bulk({delivery.endpoint_id for delivery in batch})
    appids = dict(OfficialAccount.objects.filter(pk__in={d.event.account_id for d in batch}).values_list("pk", "appid"))
    for delivery in batch:
        delivery.endpoint = endpoints[delivery.endpoint_id]
        delivery.event.appid = appids.get(delivery.event.account_id, "")
    return batch


def payload(event: Event) -> dict:
    """The JSON body of an event (documented in the README); ``event.appid`` as set by :func:`claim`."""
    body: dict = {
        "id": event.event_id,
        "type": event.kind,
        "occurred_at": event.occurred_at.isoformat(),
        "account": event.appid,
    }
    if event.message_id:
        body["message"] = {
            "id": event.message_id,
            "channel": event.channel,
            "status": event.status,
            "touser": event.touser,
            "client_msg_id": event.client_msg_id,
            "msgid": event.msgid,
            "errcode": event.errcode,
            "errmsg": event.errmsg,
            "campaign": event.campaign_id,
        }
    else:
        body["campaign"] = {"id": event.campaign_id, "state": event.status}
    return body


@dataclass
class Attempt:
    delivery: Delivery
    status: int | None = None
    error: str = ""
    latency_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def attempt(delivery: Delivery) -> Attempt:
    """POST one delivery, signed now; never raises (the outcome, whatever it is, goes to the log)."""
    body = json.dumps(payload(delivery.event), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        signing.EVENT_ID_HEADER: delivery.event.event_id,
        signing.SIGNATURE_HEADER: signing.signature_header(delivery.endpoint.secret, timestamp, body),
    }
    result = Attempt(delivery)
    started = time.monotonic()
    try:
        answer = transport.post(delivery.endpoint.url, body, headers, timeout=settings.WXNOTIFY_WEBHOOK_TIMEOUT_SECONDS)
        result.status = answer.status
        if not result.ok:
            result.error = f"HTTP {answer.status}: {answer.body}"
    except transport.WebhookRefused as error:
        result.error = str(error)
    except Exception as error:
        result.error = f"{type(error).__name__}: {error}"
    result.latency_ms = round((time.monotonic() - started) * 1000)
    return result


def backoff_seconds(attempts: int) -> float:
    step = min(
        settings.WXNOTIFY_WEBHOOK_RETRY_MAX_SECONDS,
        settings.WXNOTIFY_WEBHOOK_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1),
    )
    return step / 2 + random.uniform(0, step / 2)


def write_back(results: list[Attempt], *, token: str) -> None:
    """Store the outcomes of a batch: one UPDATE per delivery, sent together (``executemany``), each touching the row
    only while it still carries our claim (a claim whose lease ran out may have passed to another worker).

    Plain SQL: an ORM ``bulk_update`` builds a CASE per column and row, which cost more CPU than the posts.
    """
    now = timezone.now()
    quote = connection.ops.quote_name
    names = (*_OUTCOME_COLUMNS, "id", "claim_token", "attempts", "lease_expires_at")
    column = {name: quote(Delivery._meta.get_field(name).column) for name in names}
    assignments = ", ".join(f"{column[name]} = %s" for name in _OUTCOME_COLUMNS)
    sql = (
        f"UPDATE {quote(Delivery._meta.db_table)} SET {assignments}, "  # noqa: S608 -- names quoted, values bound
        f"{column['attempts']} = {column['attempts']} + 1, {column['claim_token']} = '', "
        f"{column['lease_expires_at']} = NULL WHERE {column['id']} = %s AND {column['claim_token']} = %s"
    )
    adapt = connection.ops.adapt_datetimefield_value
    rows = []
    for result in results:
        delivery = result.delivery
        state, delivered_at, next_attempt_at = Delivery.State.DELIVERED, now, delivery.next_attempt_at
        if not result.ok:
            delivered_at = None
            next_attempt_at = now + timedelta(seconds=backoff_seconds(delivery.attempts + 1))
            state = Delivery.State.PENDING
            if next_attempt_at > delivery.retry_until:
                state = Delivery.State.FAILED
                logger.warning("Gave up delivering %s to endpoint #%s", delivery.public_event_id, delivery.endpoint_id)
        rows.append(
            [
                state,
                adapt(now),
                result.status,
                result.latency_ms,
                result.error[:512],
                adapt(delivered_at),
                adapt(next_attempt_at),
                delivery.pk,
                token,
            ]
        )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def claim_limit(pool: ThreadPoolExecutor) -> int:
    return CLAIM_BATCHES_PER_THREAD * pool._max_workers


def deliver_round(*, pool: ThreadPoolExecutor, token: str | None = None) -> tuple[int, bool]:
    """Fan out, then claim and post one batch in parallel.

    Returns how many events and deliveries were handled, and whether the claim was full (more is waiting).
    """
    token = token or uuid.uuid4().hex
    now = timezone.now()
    handled = fan_out(now=now)
    limit = claim_limit(pool)
    batch = claim(now=now, token=token, limit=limit)
    if batch:
        write_back(list(pool.map(attempt, batch)), token=token)
    return handled + len(batch), len(batch) >= limit


def replay(deliveries) -> int:
    """Send deliveries again (the same event id), whatever became of them, retrying for another full window."""
    now = timezone.now()
    return deliveries.update(
        state=Delivery.State.PENDING,
        next_attempt_at=now,
        retry_until=now + timedelta(hours=settings.WXNOTIFY_WEBHOOK_RETRY_HOURS),
        lease_expires_at=None,
        claim_token="",
    )
