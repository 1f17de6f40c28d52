"""Delivery reports (TEMPLATESENDJOBFINISH, subscribe_msg_sent_event): queued per delivered send, resolved and
counted when pushed.

The pushing itself (a delay queue and a pool of posting threads) lives in ``sandbox.receipt_dispatch``.
"""

from __future__ import annotations

from sandbox.callbacks import CallbackTarget
from sandbox.receipt_dispatch import Receipt
from sandbox.state.accounts import Account
from sandbox.state.base import StateBase

# A recipient whose openid starts with one of these is reported failed; everyone else ``success``.
RECEIPT_STATUS_BY_PREFIX = {"rblock_": "failed:user block", "rfail_": "failed: system failed"}


class ReceiptsMixin(StateBase):
    def _queue_receipt(self, account: Account, touser: str, msgid: int) -> None:
        """Queue the report of a delivery (the lock is held) when receipts are on and the account has a callback."""
        faults = self.faults
        if not (faults.receipts and account.callback_url):
            return
        status = next(
            (text for prefix, text in RECEIPT_STATUS_BY_PREFIX.items() if touser.startswith(prefix)),
            "success",
        )
        queued = self.receipt_queue.put(
            account.appid, touser, msgid, status, faults.receipt_delay_ms / 1000, self._generation
        )
        if not queued:
            account.counters.receipts_failed += 1

    def _queue_subscription_receipt(self, account: Account, touser: str, pri_tmpl_id: str, msgid: int) -> None:
        """Queue the ``subscribe_msg_sent_event`` of a bizsend WeChat accepted (the lock is held), when receipts are
        on and the account has a callback: ``ErrorCode`` is ``Faults.sent_event_error_code`` (0, ``success``, unless
        a test makes deliveries fail; ``ErrorStatus`` is then ``failed``)."""
        faults = self.faults
        if not (faults.receipts and account.callback_url):
            return
        error_code = faults.sent_event_error_code
        queued = self.receipt_queue.put(
            account.appid,
            touser,
            msgid,
            "success" if error_code == 0 else "failed",
            faults.receipt_delay_ms / 1000,
            self._generation,
            template_id=pri_tmpl_id,
            error_code=error_code,
        )
        if not queued:
            account.counters.receipts_failed += 1

    def receipt_target(self, receipt: Receipt) -> CallbackTarget | None:
        """Where to push ``receipt`` now; None when its account is gone, has no callback URL or was reset since."""
        with self.lock:
            account = self.accounts.get(receipt.appid)
            if account is None or receipt.generation != self._generation:
                return None
            return account.callback_target()

    def record_receipt(self, receipt: Receipt, delivered: bool) -> None:
        with self.lock:
            account = self.accounts.get(receipt.appid)
            if account is None or receipt.generation != self._generation:
                return
            if delivered:
                account.counters.receipts_sent += 1
            else:
                account.counters.receipts_failed += 1
