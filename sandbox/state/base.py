"""What every part of :class:`sandbox.state.SandboxState` shares: one lock and the state it guards.

``SandboxState`` is assembled from one class per API area (tokens, sends, users, QR codes, simulated users,
receipts), each in its own module; they all work on the attributes declared here, which ``SandboxState``
sets up (``__init__``) and rebuilds (``reset``).  Every public method takes ``lock`` (re-entrant), so a
method may call another.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

from sandbox.receipt_dispatch import DelayQueue
from sandbox.state.accounts import Account
from sandbox.state.errors import SandboxError
from sandbox.state.faults import Faults


class StateBase:
    lock: threading.RLock
    accounts: dict[str, Account]
    faults: Faults
    # Delivered messages and send records kept for inspection (the oldest are dropped beyond this).
    message_capacity: int
    receipt_queue: DelayQueue
    _random: random.Random
    # Message and event ids, unique across resets (see SandboxState.__init__).
    _ids: Iterator[int]
    # Bumped by every reset: receipts queued before a reset must not be pushed or counted after it.
    _generation: int

    @staticmethod
    def _fail(account: Account, errcode: int, detail: str | None = None) -> SandboxError:
        """Count an API failure of ``account`` and return the error to raise."""
        account.counters.errors[errcode] = account.counters.errors.get(errcode, 0) + 1
        return SandboxError(errcode, detail)
