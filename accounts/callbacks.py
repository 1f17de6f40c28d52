"""The old home of ``accounts.tasks.fetch_follower_profile``, kept importable for task rows that name it.

The callback endpoint lived here before it became the ``callbacks`` app, and queued each new follower's profile
fetch as ``accounts.callbacks.fetch_follower_profile``.  A fetch queued before an upgrade and not yet run keeps
that dotted path in its task row (rows cannot be rewritten), so the name must resolve until no queue can hold
such a row; then delete this module.
"""

from accounts.tasks import fetch_follower_profile

__all__ = ["fetch_follower_profile"]
