"""When and by whom delivery reports are pushed: WeChat sends TEMPLATESENDJOBFINISH (template sends) and
subscribe_msg_sent_event (bizsend) some time after a send, so here a delay queue releases each report at its due
time to a small fixed pool of posting threads (a burst of sends must not spawn a thread per report).  Building and
signing the push is ``sandbox.callbacks``'.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from sandbox.callbacks import (
    CALLBACK_ATTEMPTS,
    CALLBACK_TIMEOUT_S,
    CallbackTarget,
    event_xml,
    post_callback,
    subscription_event_xml,
)

SENT_EVENT = "subscribe_msg_sent_event"


@dataclass(order=True)
class Receipt:
    """A delivery report waiting for its due time: a TEMPLATESENDJOBFINISH, or with a ``template_id`` (priTmplId) a
    subscribe_msg_sent_event whose item reports ``error_code`` and ``status`` (ErrorStatus)."""

    due: float
    seq: int
    appid: str = field(compare=False)
    openid: str = field(compare=False)
    msgid: int = field(compare=False)
    status: str = field(compare=False)
    generation: int = field(compare=False, default=0)
    template_id: str = field(compare=False, default="")
    error_code: int = field(compare=False, default=0)

    def event(self, original_id: str) -> str:
        """The XML WeChat pushes for this report."""
        if self.template_id:
            item: list[tuple[str, str | int]] = [
                ("TemplateId", self.template_id),
                ("MsgID", self.msgid),
                ("ErrorCode", self.error_code),
                ("ErrorStatus", self.status),
            ]
            return subscription_event_xml(original_id, self.openid, SENT_EVENT, "SubscribeMsgSentEvent", [item])
        return event_xml(
            original_id,
            self.openid,
            [("MsgType", "event"), ("Event", "TEMPLATESENDJOBFINISH"), ("MsgID", self.msgid), ("Status", self.status)],
        )


class DelayQueue:
    """A thread-safe min-heap of receipts released at their due time (``time.monotonic`` based)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._heap: list[Receipt] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def put(
        self,
        appid: str,
        openid: str,
        msgid: int,
        status: str,
        delay_s: float,
        generation: int = 0,
        *,
        template_id: str = "",
        error_code: int = 0,
    ) -> bool:
        """Queue a receipt (a subscription one with ``template_id``); False when the queue is full (the caller counts
        it as failed)."""
        receipt = Receipt(
            time.monotonic() + delay_s,
            next(self._seq),
            appid,
            openid,
            msgid,
            status,
            generation,
            template_id,
            error_code,
        )
        with self._cond:
            if len(self._heap) >= self.capacity:
                return False
            heapq.heappush(self._heap, receipt)
            if self._heap[0] is receipt:
                self._cond.notify()
        return True

    def get(self) -> Receipt | None:
        """Block until a receipt is due and return it; None once the queue is closed."""
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0].due - time.monotonic()
                if wait <= 0:
                    receipt = heapq.heappop(self._heap)
                    if self._heap:
                        self._cond.notify()
                    return receipt
                self._cond.wait(wait)
            return None

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class ReceiptDispatcher:
    """A fixed pool of threads that POSTs due receipts, each up to three times like WeChat.

    ``resolve(receipt)`` returns the account's current callback target (or None when it has no callback
    URL or the receipt predates a reset); ``record(receipt, ok)`` counts the outcome.  An unreachable
    service is counted, never raised.
    """

    def __init__(
        self,
        queue: DelayQueue,
        resolve: Callable[[Receipt], CallbackTarget | None],
        record: Callable[[Receipt, bool], None],
        workers: int = 8,
    ) -> None:
        self.queue = queue
        self._resolve = resolve
        self._record = record
        self._threads = [
            threading.Thread(target=self._run, name=f"sandbox-receipts-{n}", daemon=True) for n in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout=CALLBACK_TIMEOUT_S + 1)

    def _run(self) -> None:
        session = requests.Session()
        while (receipt := self.queue.get()) is not None:
            target = self._resolve(receipt)
            if target is None:
                continue
            self._record(receipt, self._deliver(session, target, receipt.openid, receipt.event(target.original_id)))

    @staticmethod
    def _deliver(session: requests.Session, target: CallbackTarget, openid: str, xml: str) -> bool:
        for _attempt in range(CALLBACK_ATTEMPTS):
            try:
                response = post_callback(session, target, openid, xml)
            except requests.RequestException:
                continue
            if response.status_code == 200:
                return True
        return False
