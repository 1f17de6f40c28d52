"""An account's quiet hours: the send pipeline holds campaign messages inside them, and re-plans when they change."""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal

from accounts.models import OfficialAccount

# The fields whose change moves the end of a quiet window: the window itself and the zone it is read in.
QUIET_HOURS_FIELDS = ("quiet_start", "quiet_end", "time_zone")

# Sent after an account's quiet hours (or time zone) changed (kwargs: account_id), so the send pipeline re-plans
# the messages waiting for them; a signal because this app does not import the pipeline.
quiet_hours_changed = Signal()


def announce_quiet_hours_change(account: OfficialAccount, changed_fields: list[str] | set[str]) -> bool:
    """After the surrounding transaction commits, tell the pipeline when a saved change touched the quiet hours.

    Returns whether it will.
    """
    if not set(changed_fields) & set(QUIET_HOURS_FIELDS):
        return False
    account_id = account.pk
    transaction.on_commit(lambda: quiet_hours_changed.send(sender=OfficialAccount, account_id=account_id))
    return True
