"""The old home of ``accounts.tasks.run_follower_sync``, kept importable for task rows that name it.

Follower syncs were queued as ``accounts.jobs.run_follower_sync`` until task entry points moved to the
``tasks`` module of their app.  A sync queued before an upgrade and not yet run keeps that dotted path in its
task row (rows cannot be rewritten), so the name must resolve until no queue can hold such a row; then delete
this module.
"""

from accounts.tasks import run_follower_sync

__all__ = ["run_follower_sync"]
