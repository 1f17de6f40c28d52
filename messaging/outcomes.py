"""What the answer to a send means for its message, and writing those outcomes back in bulk.

Every claimed message ends its attempt in exactly one of these ways: sent (with WeChat's msgid), failed for good
(with the errcode and a reason), back in the queue for a retry after a backoff, or back in the queue without
spending the attempt (an account on hold).  Any exception counts as an attempt, so a message can never cycle for
ever: after ``WXNOTIFY_MAX_ATTEMPTS`` it fails with the last reason.

A message whose attempt may have reached WeChat without our hearing the answer (a timeout, a dropped connection,
an exception during the call, a worker that died) may be sent again only inside the resend window
(``messaging.models.resend_window_start``), because only then does WeChat still de-duplicate the resend by its
``client_msg_id``.  Past the window it fails with errcode -9001: it may have been delivered, and a person decides.
A subscription notification has no such window: ``bizsend`` takes no ``client_msg_id``, so WeChat cannot drop a
resend, and a resend could reach the user twice and spend a second credit.  Its unknown outcome fails it with
errcode -9001 at once; its ``subscribe_msg_sent_event`` receipt, if WeChat did accept it, makes it delivered later
(``messaging.services.receipts``).

Subscription notifications also keep the consent ledger in step with WeChat: each send WeChat accepted spends one
credit (in the flush, one UPDATE per template and count), and a 43101 sets the user's credits for the template to
zero, so the next sends are refused before any WeChat call.

Outcomes are grouped so that each group is one UPDATE, and each UPDATE touches only rows that still carry the
task's claim token, so a task that lost its claim (its lease ran out) can never overwrite what another did.  When a
webhook endpoint subscribes (messaging.events), a group that makes messages sent or failed and the INSERT … SELECT of
its events share one transaction.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Case, DateTimeField, F, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Follower, OfficialAccount
from accounts.services import record_wechat_error
from messaging import events, ratelimit, reasons, services
from messaging.claims import as_datetime
from messaging.models import Channel, Message
from subscriptions.services import consume_credits, zero_credits
from templates_app.services import flag_template_problem
from wxnotify.tracing import traced
from wxnotify.wechat.errors import (
    INTERNAL_ERROR_ERRCODE,
    OUTCOME_UNKNOWN_ERRCODE,
    ConsentError,
    ErrorKind,
    WeChatError,
    classify_errcode,
    rid_from_errmsg,
)

logger = logging.getLogger("wxnotify.messaging")

# Recipient errors that mean the follower has left the account.
UNFOLLOWED_ERRCODES = frozenset({43004, 50005})
# Configuration errors that are about the template rather than the account.
TEMPLATE_ERRCODES = frozenset({40037, 43116})
# Why a subscription notification whose attempt went unanswered fails at once (errcode -9001) instead of waiting
# for a retry; the sweeper says the same of one whose worker died.
NO_RESEND_WINDOW_REASON = (
    "No answer from WeChat, and a subscription notification has no resend window (bizsend takes no client_msg_id, so "
    "WeChat cannot drop a resend): not sent again. It may have been delivered; its receipt will tell."
)
# Columns the write-back of sent messages touches.
_SENT_COLUMNS = (
    "id",
    "status",
    "msgid",
    "errcode",
    "errmsg",
    "sent_at",
    "lease_expires_at",
    "updated_at",
    "claim_token",
)


class CancelledBeforeSend(Exception):
    """Raised instead of calling WeChat when the message's campaign was cancelled after the claim."""


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff: half the step fixed, half random, so the retries of a batch spread out."""
    step = min(settings.WXNOTIFY_RETRY_MAX_DELAY, settings.WXNOTIFY_RETRY_BASE_DELAY * 2 ** max(0, attempt - 1))
    delay = step / 2 + random.uniform(0, step / 2)
    return max(delay, retry_after or 0.0)


def truncate(text: str, limit: int = 512) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Writes:
    """Outcomes waiting to be written back, grouped so each group is one UPDATE."""

    # message id → (account id, WeChat msgid or None)
    sent: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    # (errcode, errmsg) → message ids
    failed: dict[tuple[int | None, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    # (errcode, errmsg, outcome unknown) → {message id: next attempt}
    retry: dict[tuple[int | None, str, bool], dict[int, datetime]] = field(default_factory=lambda: defaultdict(dict))
    # next attempt → message ids put back without spending their attempt (quota holds)
    released: dict[datetime, list[int]] = field(default_factory=lambda: defaultdict(list))
    # (next attempt, reason) → message ids put back without spending their attempt, the reason shown meanwhile
    deferred: dict[tuple[datetime, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    unfollowed: set[tuple[int, str]] = field(default_factory=set)
    # (account id, priTmplId, openid) → sends WeChat accepted: credits to spend in the consent ledger
    consumed: dict[tuple[int, str, str], int] = field(default_factory=lambda: defaultdict(int))
    # (account id, openid, priTmplId) of subscription notifications WeChat accepted without a msgid, or whose
    # outcome is unknown: their receipts may have arrived before the write-back and wait to be matched by recipient
    # and template
    unnumbered: set[tuple[int, str, str]] = field(default_factory=set)
    # (account id, openid, priTmplId) → the message's account: WeChat answered 43101, the credits are zeroed
    refused: dict[tuple[int, str, str], OfficialAccount] = field(default_factory=dict)

    def __len__(self) -> int:
        return (
            len(self.sent)
            + sum(map(len, self.failed.values()))
            + sum(map(len, self.retry.values()))
            + sum(map(len, self.released.values()))
            + sum(map(len, self.deferred.values()))
        )


class Outcomes:
    """The outcomes of one delivery task's attempts, decided as answers arrive and written back by :meth:`flush`."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.max_attempts = settings.WXNOTIFY_MAX_ATTEMPTS
        self.writes = _Writes()
        self.held: dict[int, float] = {}
        self.flagged_templates: set[int] = set()
        self.flagged_accounts: set[int] = set()
        self.counts: dict[str, int] = defaultdict(int)

    def __len__(self) -> int:
        return len(self.writes)

    # -- deciding --

    def sent(self, message: Message, msgid: int | None) -> None:
        """WeChat accepted the message; ``msgid`` is None when its answer carried none (``bizsend`` may not)."""
        self.writes.sent[message.pk] = (message.account_id, msgid)
        self.counts["sent"] += 1
        if message.channel == Channel.SUBSCRIBE:
            self.writes.consumed[(message.account_id, message.template_id_sent, message.touser)] += 1
            if msgid is None:
                self.writes.unnumbered.add((message.account_id, message.touser, message.template_id_sent))

    def fail(self, message: Message, errcode: int | None, reason: str) -> None:
        self.writes.failed[(errcode, truncate(reason))].append(message.pk)
        self.counts["failed"] += 1

    def error(self, message: Message, error: BaseException, *, during_send: bool = True) -> None:
        """Decide what a failed attempt means for the message (the error kinds are in wxnotify.wechat.errors).

        ``during_send`` is False for failures before any call to WeChat was made (the token fetch, preparing the
        request): their outcome is known.  During a send the client turns a token refused again right after its
        refresh into a configuration error, but the message itself is fine: it is retried and the account flagged.
        """
        if isinstance(error, CancelledBeforeSend):
            self.fail(message, None, reasons.CANCELLED_REASON)
            return
        if not isinstance(error, WeChatError):
            with traced(message.trace_id):
                logger.error("Unexpected error sending message #%s", message.pk, exc_info=error)
            self._retry_or_fail(
                message, INTERNAL_ERROR_ERRCODE, f"Internal error: {type(error).__name__}", unknown=during_send
            )
            return
        reason = truncate(error.errmsg)
        kind = error.kind
        with traced(message.trace_id):
            logger.warning("Message #%s to %s: %s (%s)", message.pk, message.touser, error, kind)
        if during_send and kind == ErrorKind.CONFIGURATION and _is_token_errcode(error.errcode):
            self._flag(message, error)
            kind = ErrorKind.TOKEN_INVALID
        if error.outcome_unknown and during_send:
            if message.channel == Channel.TEMPLATE:
                reason = f"{reason} (no answer: retried with the same client_msg_id)"
            self._retry_or_fail(message, error.errcode, reason, unknown=True)
        elif kind in (ErrorKind.TRANSIENT, ErrorKind.TOKEN_INVALID):
            self._retry_or_fail(message, error.errcode, reason, retry_after=error.retry_after)
        elif kind in (ErrorKind.QUOTA, ErrorKind.TOKEN_SOURCE):
            self._hold(message, error)
        else:
            self.fail(message, error.errcode, reason)
            if isinstance(error, ConsentError) and message.channel == Channel.SUBSCRIBE:
                self.writes.refused[(message.account_id, message.touser, message.template_id_sent)] = message.account
            elif kind == ErrorKind.RECIPIENT and error.errcode in UNFOLLOWED_ERRCODES:
                self.writes.unfollowed.add((message.account_id, message.touser))
            elif kind == ErrorKind.CONFIGURATION:
                self._flag(message, error)

    def _retry_or_fail(
        self,
        message: Message,
        errcode: int | None,
        reason: str,
        *,
        retry_after: float | None = None,
        unknown: bool = False,
    ) -> None:
        """Queue the message again after its backoff, unless that is one attempt too many or past the resend window."""
        unknown_since = message.outcome_unknown_since or (message.attempted_at if unknown else None)
        if unknown_since is not None and message.channel == Channel.SUBSCRIBE:
            self.fail(message, OUTCOME_UNKNOWN_ERRCODE, f"{NO_RESEND_WINDOW_REASON} Last: {reason}")
            # Its receipt may have come already, and waits to be matched by recipient and template.
            self.writes.unnumbered.add((message.account_id, message.touser, message.template_id_sent))
            return
        if message.attempts >= self.max_attempts:
            if unknown_since is not None:
                self.fail(
                    message,
                    OUTCOME_UNKNOWN_ERRCODE,
                    f"No answer from WeChat to one of {message.attempts} attempts; it may have been delivered. "
                    f"Last: {reason}",
                )
            else:
                self.fail(message, errcode, reason)
            return
        when = timezone.now() + timedelta(seconds=backoff_seconds(message.attempts, retry_after))
        window = timedelta(seconds=settings.WXNOTIFY_RESEND_WINDOW_SECONDS)
        if unknown_since is not None and when > unknown_since + window:
            self.fail(
                message,
                OUTCOME_UNKNOWN_ERRCODE,
                f"No answer from WeChat, and a resend now could reach the user twice; it may have been delivered. "
                f"Last: {reason}",
            )
            return
        self.writes.retry[(errcode, truncate(reason), unknown)][message.pk] = when
        self.counts["retried"] += 1

    def _hold(self, message: Message, error: WeChatError) -> None:
        until = time.time() + (error.retry_after or 3600.0)
        if message.account_id not in self.held:
            self.held[message.account_id] = until
            ratelimit.hold_account(message.account_id, until)
            record_wechat_error(message.account, error)
            logger.warning(
                "Account %s: %s; holding its queue until %s",
                message.account_id,
                "its token source gave no token" if error.kind == ErrorKind.TOKEN_SOURCE else "daily quota reached",
                until,
            )
        self.release([message], self.held[message.account_id])

    def release(self, messages: list[Message], until: float) -> None:
        """Back to the queue without spending the attempt: the account, not the message, was the problem."""
        self.writes.released[as_datetime(until)].extend(message.pk for message in messages)
        self.counts["held"] += len(messages)

    def defer(self, messages: list[Message], until: datetime, reason: str) -> None:
        """Back to the queue until ``until`` without spending the attempt, saying why (a sending cap's hold)."""
        self.writes.deferred[(until, truncate(reason))].extend(message.pk for message in messages)
        self.counts["held"] += len(messages)

    def _flag(self, message: Message, error: WeChatError) -> None:
        if error.errcode in TEMPLATE_ERRCODES and message.channel == Channel.SUBSCRIBE:
            return  # about the subscription template, which has no problem flag; the message names the errcode
        if error.errcode in TEMPLATE_ERRCODES:
            if message.template_id not in self.flagged_templates:
                self.flagged_templates.add(message.template_id)
                flag_template_problem(message.template, error.errcode, error.errmsg)
        elif message.account_id not in self.flagged_accounts:
            self.flagged_accounts.add(message.account_id)
            record_wechat_error(message.account, error)

    # -- writing back --

    def _ours(self, ids: Any):
        return Message.objects.filter(pk__in=list(ids), claim_token=self.token, status=Message.Status.SENDING)

    def flush(self) -> None:
        writes, self.writes = self.writes, _Writes()
        now = timezone.now()
        if writes.sent:
            with events.recording(events.MESSAGE_SENT) as record:
                self._store_sent(writes.sent, now)
                if record:
                    events.record_messages(
                        events.MESSAGE_SENT,
                        Message.objects.filter(
                            pk__in=list(writes.sent), claim_token=self.token, status=Message.Status.SENT, sent_at=now
                        ),
                    )
            msgids_by_account: dict[int, list[int]] = defaultdict(list)
            for account_id, msgid in writes.sent.values():
                if msgid is not None:
                    msgids_by_account[account_id].append(msgid)
            for account_id, msgids in msgids_by_account.items():
                services.apply_pending_receipts(account_id, msgids)
        self._write_consent(writes)
        for (errcode, reason), ids in writes.failed.items():
            with events.recording(events.MESSAGE_FAILED) as record:
                self._ours(ids).update(
                    status=Message.Status.FAILED,
                    errcode=errcode,
                    errmsg=reason,
                    lease_expires_at=None,
                    finished_at=now,
                    updated_at=now,
                    **_rid_columns(reason, now),
                )
                if record:
                    events.record_messages(
                        events.MESSAGE_FAILED,
                        Message.objects.filter(
                            pk__in=ids, claim_token=self.token, status=Message.Status.FAILED, updated_at=now
                        ),
                    )
        for (errcode, reason, unknown), next_attempts in writes.retry.items():
            changes: dict[str, Any] = {}
            if unknown:
                changes["outcome_unknown_since"] = Coalesce(F("outcome_unknown_since"), F("attempted_at"))
            self._ours(next_attempts).update(
                status=Message.Status.QUEUED,
                errcode=errcode,
                errmsg=reason,
                next_attempt_at=Case(
                    *[When(pk=pk, then=Value(when)) for pk, when in next_attempts.items()],
                    output_field=DateTimeField(),
                ),
                lease_expires_at=None,
                updated_at=now,
                **changes,
                **_rid_columns(reason, now),
            )
        for until, ids in writes.released.items():
            self._ours(ids).update(
                status=Message.Status.QUEUED,
                attempts=F("attempts") - 1,
                next_attempt_at=until,
                lease_expires_at=None,
                updated_at=now,
            )
        for (until, reason), ids in writes.deferred.items():
            self._ours(ids).update(
                status=Message.Status.QUEUED,
                attempts=F("attempts") - 1,
                errcode=None,
                errmsg=reason,
                next_attempt_at=until,
                lease_expires_at=None,
                updated_at=now,
            )
        for account_id, openid in writes.unfollowed:
            Follower.objects.filter(account_id=account_id, openid=openid, subscribed=True).update(
                subscribed=False, unsubscribed_at=now, updated_at=now
            )
        if writes.unnumbered:
            services.apply_pending_subscription_receipts(writes.unnumbered)

    @staticmethod
    def _write_consent(writes: _Writes) -> None:
        """Spend the credits of the subscription notifications WeChat accepted, grouped so that each template and
        count is one UPDATE; zero those WeChat answered 43101 for.  Whether or not our write-back of the message
        succeeded (a task that lost its claim writes nothing back): WeChat spent the credit all the same."""
        groups: dict[tuple[int, str, int], list[str]] = defaultdict(list)
        for (account_id, pri_tmpl_id, openid), count in writes.consumed.items():
            groups[(account_id, pri_tmpl_id, count)].append(openid)
        for (account_id, pri_tmpl_id, count), openids in groups.items():
            consume_credits(account_id, pri_tmpl_id, openids, count)
        for (_account_id, openid, pri_tmpl_id), account in writes.refused.items():
            zero_credits(account, openid, pri_tmpl_id)

    def _store_sent(self, sent: dict[int, tuple[int, int | None]], now: datetime) -> None:
        """Mark our rows sent with their msgids in one UPDATE.

        Plain SQL: this runs for every message at full speed, and building an ORM ``Case(When(...))`` per row cost
        more CPU than the HTTP call itself.
        """
        quote = connection.ops.quote_name
        column = {name: quote(Message._meta.get_field(name).column) for name in _SENT_COLUMNS}
        adapted_now = connection.ops.adapt_datetimefield_value(now)
        ids = list(sent)
        cases = " ".join(["WHEN %s THEN %s"] * len(ids))
        placeholders = ", ".join(["%s"] * len(ids))
        sql = (
            f"UPDATE {quote(Message._meta.db_table)} SET {column['status']} = %s, "  # noqa: S608 -- values bound
            f"{column['msgid']} = CAST(CASE {column['id']} {cases} END AS BIGINT), "
            f"{column['errcode']} = NULL, {column['errmsg']} = %s, {column['sent_at']} = %s, "
            f"{column['lease_expires_at']} = NULL, {column['updated_at']} = %s "
            f"WHERE {column['id']} IN ({placeholders}) AND {column['claim_token']} = %s AND {column['status']} = %s"
        )
        params: list[Any] = [Message.Status.SENT.value]
        for pk in ids:
            params += (pk, sent[pk][1])
        params += ["", adapted_now, adapted_now, *ids, self.token, Message.Status.SENDING.value]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def _is_token_errcode(errcode: int | None) -> bool:
    return errcode is not None and classify_errcode(errcode) == ErrorKind.TOKEN_INVALID


def _rid_columns(reason: str, now: datetime) -> dict[str, Any]:
    """The rid WeChat gave the failed call, kept apart from the errmsg for a look-up at WeChat (``rid/get``); none
    for our own reasons, which leave the rid of an earlier failed call in place."""
    rid = rid_from_errmsg(reason)
    return {"wechat_rid": rid, "wechat_rid_at": now} if rid else {}
