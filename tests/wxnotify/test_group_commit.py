"""wxnotify.group_commit: rows of concurrent threads written together, none released before its own write."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from wxnotify.group_commit import GroupCommit


class GatedWriter:
    """A write that records its batches and holds the first one until ``release`` is set."""

    def __init__(self, *, fail_batch: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.writing = threading.Event()
        self.release = threading.Event()
        self.fail_batch = fail_batch
        self.after: list[int] = []

    def write(self, rows: Sequence[int]) -> int:
        self.batches.append(list(rows))
        if len(self.batches) == 1:
            self.writing.set()
            assert self.release.wait(10)
        if self.fail_batch == len(self.batches):
            raise RuntimeError(f"batch {len(self.batches)} failed")
        return len(self.batches)


def queued(commit: GroupCommit, count: int) -> None:
    """Wait until ``count`` rows wait behind the running write."""
    deadline = time.monotonic() + 10
    while len(commit._queue) < count:
        assert time.monotonic() < deadline, "rows never queued"
        time.sleep(0.001)


def start(commit: GroupCommit, rows: range, outcomes: dict[int, object]) -> list[threading.Thread]:
    def submit(row: int) -> None:
        try:
            outcomes[row] = commit.submit(row)
        except RuntimeError as exc:
            outcomes[row] = exc

    threads = [threading.Thread(target=submit, args=(row,)) for row in rows]
    for thread in threads:
        thread.start()
    return threads


def behind_a_held_write(writer: GatedWriter, commit: GroupCommit, rows: int) -> dict[int, object]:
    """Row 0 is written and held; rows 1 .. ``rows`` queue behind it; then the write goes on.  Each row's outcome."""
    outcomes: dict[int, object] = {}
    threads = start(commit, range(1), outcomes)
    assert writer.writing.wait(10)
    threads += start(commit, range(1, rows + 1), outcomes)
    queued(commit, rows)
    time.sleep(0.05)
    assert outcomes == {}  # nobody is answered before its own write
    writer.release.set()
    for thread in threads:
        thread.join(10)
    return outcomes


def test_a_lone_row_is_written_at_once_and_alone():
    writer = GatedWriter()
    writer.release.set()
    commit = GroupCommit(writer.write, max_batch=10, after_write=writer.after.append)
    assert commit.submit(7) == 1
    assert commit.submit(8) == 2
    assert writer.batches == [[7], [8]]
    assert writer.after == [1, 2]


def test_rows_arriving_during_a_write_share_the_next_one_and_wait_for_it():
    writer = GatedWriter()
    commit = GroupCommit(writer.write, max_batch=10, after_write=writer.after.append)
    outcomes = behind_a_held_write(writer, commit, 5)
    assert writer.batches == [[0], [1, 2, 3, 4, 5]]
    assert outcomes == {0: 1, 1: 2, 2: 2, 3: 2, 4: 2, 5: 2}
    assert writer.after == [1, 2]  # once per batch, not per row


def test_a_batch_holds_at_most_max_batch_rows():
    writer = GatedWriter()
    commit = GroupCommit(writer.write, max_batch=3)
    outcomes = behind_a_held_write(writer, commit, 7)
    assert [len(batch) for batch in writer.batches] == [1, 3, 3, 1]
    assert sorted(row for batch in writer.batches for row in batch) == list(range(8))
    assert len(outcomes) == 8


def test_a_failed_write_fails_its_own_rows_only_and_the_next_batch_goes_on():
    writer = GatedWriter(fail_batch=1)
    commit = GroupCommit(writer.write, max_batch=10, after_write=writer.after.append)
    outcomes = behind_a_held_write(writer, commit, 3)
    assert isinstance(outcomes[0], RuntimeError)
    assert {outcomes[row] for row in (1, 2, 3)} == {2}
    assert writer.after == [2]  # nothing follows a write that failed
    writer.fail_batch = 3
    with pytest.raises(RuntimeError, match="batch 3 failed"):
        commit.submit(9)
    assert commit.submit(10) == 4  # a failure leaves nothing locked


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(len, max_batch=0)
