"""``SandboxState``: the whole fake WeChat behind one lock, assembled from one class per API area."""

from __future__ import annotations

import copy
import itertools
import random
import threading
import time
from dataclasses import asdict
from typing import Any

from sandbox.demo import demo_config
from sandbox.receipt_dispatch import DelayQueue
from sandbox.state.accounts import Account
from sandbox.state.api_faults import ApiFaultsMixin
from sandbox.state.faults import Faults
from sandbox.state.ledger import LedgerMixin
from sandbox.state.request_log import RequestLogMixin
from sandbox.state.sends import SendsMixin
from sandbox.state.simulation import SimulationMixin
from sandbox.state.subscriptions import SubscriptionsMixin
from sandbox.state.users import UsersMixin


class SandboxState(
    SendsMixin, SubscriptionsMixin, UsersMixin, SimulationMixin, ApiFaultsMixin, RequestLogMixin, LedgerMixin
):
    """All sandbox state behind one lock; every public method is safe to call from any thread."""

    def __init__(self, config: dict[str, Any] | None = None, *, message_capacity: int = 100_000) -> None:
        if message_capacity < 1:
            raise ValueError("message_capacity must be at least 1")
        self.config = copy.deepcopy(config) if config is not None else demo_config()
        self.message_capacity = message_capacity
        self.lock = threading.RLock()
        self.receipt_queue = DelayQueue()
        self._random = random.Random()
        # msgids keep growing across resets so ids never repeat within a test session; they start
        # above 2**53 because real ones do, and clients must keep them as 64-bit integers.
        self._ids = itertools.count((int(time.time()) << 31) + 1)
        # Receipts queued before a reset must not be pushed or counted after it.
        self._generation = 0
        self.reset()

    def reset(self) -> None:
        """Back to the start config: accounts, followers, tokens, QR tickets, messages, counters, faults, API faults,
        an empty request log, an empty ledger (quota counts, clears, rids, intercepted messages) and no subscription
        consent or subscription notifications."""
        accounts = {}
        for spec in self.config.get("accounts", []):
            account = Account(spec)
            accounts[account.appid] = account
        faults = Faults()
        faults.update(**self.config.get("faults", {}))
        with self.lock:
            self._generation += 1
            self.accounts = accounts
            self.faults = faults
            self._reset_tokens()
            self._reset_qrcodes()
            self._reset_sends()
            self._reset_subscriptions()
            self._reset_api_faults()
            self._reset_request_log()
            self._reset_ledger()
            self.receipt_queue.clear()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        with self.lock:
            candidate = copy.copy(self.faults)
            candidate.update(**changes)
            self.faults = candidate
            return asdict(candidate)

    def upsert_account(self, spec: dict[str, Any]) -> Account:
        """Add an account or change the given fields of an existing one (tokens survive an update)."""
        appid = str(spec.get("appid") or "")
        if not appid:
            raise ValueError("an account needs an appid")
        with self.lock:
            account = self.accounts.get(appid)
            if account is None:
                account = Account(spec)
                self.accounts[appid] = account
            else:
                account.update(spec)
            return account

    def account(self, appid: str) -> Account:
        with self.lock:
            return self.accounts[appid]

    def snapshot(self) -> dict[str, Any]:
        """Counters per account, current faults, pending receipts and API requests by source, for GET /sandbox/state."""
        with self.lock:
            accounts = {
                appid: {
                    "mode": account.mode,
                    "callback_url": account.callback_url,
                    "followers": account.follower_count,
                    "templates": len(account.templates),
                    "subscription_templates": len(account.subscription_templates),
                    **account.counters.as_dict(),
                }
                for appid, account in self.accounts.items()
            }
            return {
                "accounts": accounts,
                "faults": asdict(self.faults),
                "receipts_pending": len(self.receipt_queue),
                "unauthenticated_errors": {str(k): v for k, v in sorted(self.unauthenticated_errors.items())},
                "requests_by_source": self.requests_by_source(),
            }
