"""Group commit: rows that concurrent request threads of one process must store, written by one of them at once.

Why: after a big campaign WeChat pushes hundreds of delivery receipts a second, and each is answered only once it is
durably stored.  Stored one by one, each receipt costs its own statement, commit (and WAL flush), connection health
check and cache read, on the web process and on the database alike.  With :class:`GroupCommit` a thread that finds
another thread writing queues its row instead, and the next writer takes every queued row in one statement.

Nothing is acknowledged early: :meth:`GroupCommit.submit` returns only once the write that holds its row has
committed, and raises that write's error otherwise, so "answer after one durable write" still holds for every
request.  A lone request (no concurrency) writes alone at once, as it did before; no thread ever waits for a timer.

The writer is one of the request threads (the leader), never a thread of its own: nothing runs in the background, a
process without traffic holds nothing, and the write uses the leader's own database connection.  When a leader has
written its batch it hands the lead to the oldest queued thread, which writes everything queued meanwhile.  This is
per process by design: what makes the rows durable, and unique, is the database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Row = TypeVar("Row")
Result = TypeVar("Result")


@dataclass(eq=False)
class _Waiter(Generic[Row, Result]):
    """One submitted row and what its thread learns when woken: its batch's outcome, or (not done) that it leads."""

    row: Row
    wake: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    result: Result | None = None
    error: BaseException | None = None


class GroupCommit(Generic[Row, Result]):
    """Write rows of concurrent threads in batches of up to ``max_batch`` through ``write`` (called by one of them).

    ``write`` gets the rows of a batch in submission order and returns a result that every thread of the batch gets
    back.  ``after_write``, if given, is called by the leader with that result once the batch's threads are released
    (for work that must follow the commit but need not delay the answers).
    """

    def __init__(
        self,
        write: Callable[[Sequence[Row]], Result],
        *,
        max_batch: int,
        after_write: Callable[[Result], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write = write
        self._after_write = after_write
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Waiter[Row, Result]] = []
        self._writing = False

    def submit(self, row: Row) -> Result:
        """Store ``row`` with whatever other threads submit meanwhile; returns once it is written (or raises)."""
        waiter: _Waiter[Row, Result] = _Waiter(row)
        with self._lock:
            self._queue.append(waiter)
            leads = not self._writing
            self._writing = True
        if not leads:
            waiter.wake.wait()
        if not waiter.done:
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]

    def _lead(self) -> None:
        """Write the oldest queued rows (the leader's own first), release their threads, pass the lead on."""
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        result: Result | None = None
        error: BaseException | None = None
        try:
            result = self._write([waiter.row for waiter in batch])
        except BaseException as exc:  # every thread of the batch gets the write's own error
            error = exc
        with self._lock:
            for waiter in batch:
                waiter.done, waiter.result, waiter.error = True, result, error
            successor = self._queue[0] if self._queue else None
            self._writing = successor is not None
        for waiter in batch:
            waiter.wake.set()
        if successor is not None:
            successor.wake.set()
        if error is None and self._after_write is not None:
            self._after_write(result)  # type: ignore[arg-type]
