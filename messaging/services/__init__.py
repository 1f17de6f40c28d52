"""Actions of the send pipeline: accept messages and campaigns, cancel, retry, apply delivery receipts.

Accepting only writes rows and, once the transaction has committed, tells the workers there is work
(:mod:`messaging.dispatch`): a campaign's id, or for single messages a shared signal that many requests coalesce
into one delivery task.  The rows are the source of truth: if the broker loses the task (the Redis broker never
re-delivers), the sweeper (:mod:`messaging.sweeper`) finds the due rows again, and the ``client_msg_id`` every
attempt carries lets WeChat drop a resend.

One module per job: :mod:`.checks` (validation shared by both kinds of send), :mod:`.routing` (the channels: which
fields each takes, ``auto``'s choice for a recipient), :mod:`.sending` (one message),
:mod:`.campaigns` and :mod:`.expansion` (bulk sends), :mod:`.schedules` (moving and stopping scheduled sends),
:mod:`.approval` (campaigns that wait for an admin), :mod:`.receipts`, :mod:`.ledger` (what WeChat knows of our
sends).  Callers import from this package.
"""

from messaging.reasons import (
    CANCELLED_REASON,
    CAPPED_HELD_REASON,
    CAPPED_REASON,
    DUPLICATE_REASON,
    REJECTED_REASON,
    UNSUBSCRIBED_REASON,
)
from messaging.services.approval import approve_campaign, needs_approval, reject_campaign
from messaging.services.campaigns import (
    RecipientSpec,
    RetryResult,
    cancel_campaign,
    create_campaign,
    finish_campaigns,
    retry_failed,
)
from messaging.services.checks import (
    ApprovalRefused,
    CampaignActionRefused,
    IdempotencyConflict,
    MessageActionRefused,
    MessageRejected,
)
from messaging.services.duplicates import EarlierCopies, earlier_copies
from messaging.services.expansion import expand_all_subscribed
from messaging.services.ledger import WeChatRecord, hold_end_text, poll_intercepted, quota_warnings, wechat_record
from messaging.services.receipt_records import (
    ReceivedReceipt,
    record_delivery_receipt,
    record_delivery_receipts,
    record_subscription_receipts,
)
from messaging.services.receipts import (
    RECEIPT_BATCH_SIZE,
    apply_pending_receipts,
    apply_pending_subscription_receipts,
    apply_received_receipts,
    prune_applied_receipts,
    resolve_stale_receipts,
)
from messaging.services.schedules import cancel_message, reschedule_campaign, reschedule_message
from messaging.services.sending import SendResult, request_fingerprint, send_message

__all__ = [
    "CANCELLED_REASON",
    "CAPPED_HELD_REASON",
    "CAPPED_REASON",
    "DUPLICATE_REASON",
    "RECEIPT_BATCH_SIZE",
    "REJECTED_REASON",
    "UNSUBSCRIBED_REASON",
    "ApprovalRefused",
    "CampaignActionRefused",
    "EarlierCopies",
    "IdempotencyConflict",
    "MessageActionRefused",
    "MessageRejected",
    "ReceivedReceipt",
    "RecipientSpec",
    "RetryResult",
    "SendResult",
    "WeChatRecord",
    "apply_pending_receipts",
    "apply_pending_subscription_receipts",
    "apply_received_receipts",
    "approve_campaign",
    "cancel_campaign",
    "cancel_message",
    "create_campaign",
    "earlier_copies",
    "expand_all_subscribed",
    "finish_campaigns",
    "hold_end_text",
    "needs_approval",
    "poll_intercepted",
    "prune_applied_receipts",
    "quota_warnings",
    "record_delivery_receipt",
    "record_delivery_receipts",
    "record_subscription_receipts",
    "reject_campaign",
    "request_fingerprint",
    "reschedule_campaign",
    "reschedule_message",
    "resolve_stale_receipts",
    "retry_failed",
    "send_message",
    "wechat_record",
]
