"""django-q2 task entry points of the accounts app (``accounts.tasks`` holds the token refresh schedule)."""

from __future__ import annotations

from accounts.models import FollowerSync
from accounts.services import run_follower_sync as run_sync


def run_follower_sync(sync_id: int) -> None:
    """Queued by the admin's "Sync followers": run the recorded sync, whose row tells the outcome."""
    sync = FollowerSync.objects.select_related("account").filter(pk=sync_id).first()
    if sync is not None:
        run_sync(sync)
