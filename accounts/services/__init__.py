"""Actions on official accounts and their followers.

One module per job: :mod:`.credentials` (checking an account's credentials, recording WeChat's errors on it),
:mod:`.followers` (the follower sync and profile fetches), :mod:`.keys` (re-encrypting secrets under a new key),
:mod:`.token_reads` (handing access_tokens to the company's other services, on record), :mod:`.token_conflicts`
(recording tokens another system replaced), :mod:`.quota` (WeChat's count of today's sends, and clearing it),
:mod:`.quiet_hours` (telling the send pipeline an account's quiet hours changed).
Callers import from this package.
"""

from accounts.services.credentials import check_connection, flag_unreadable_secret, record_wechat_error
from accounts.services.followers import (
    FOLLOWER_SYNC_TIMEOUT,
    FollowerSyncResult,
    queue_follower_sync,
    run_follower_sync,
    start_follower_sync,
    sync_followers,
    update_follower_profile,
)
from accounts.services.keys import KeyRotationReport, reencrypt_secrets
from accounts.services.quiet_hours import QUIET_HOURS_FIELDS, announce_quiet_hours_change, quiet_hours_changed
from accounts.services.quota import QuotaClearRefused, clear_quota, poll_quota, poll_quotas, quota_cleared
from accounts.services.token_conflicts import record_token_conflict
from accounts.services.token_reads import DEFAULT_MIN_TTL, MAX_MIN_TTL, TokenGrant, read_access_token

__all__ = [
    "DEFAULT_MIN_TTL",
    "FOLLOWER_SYNC_TIMEOUT",
    "MAX_MIN_TTL",
    "QUIET_HOURS_FIELDS",
    "FollowerSyncResult",
    "KeyRotationReport",
    "QuotaClearRefused",
    "TokenGrant",
    "announce_quiet_hours_change",
    "check_connection",
    "clear_quota",
    "flag_unreadable_secret",
    "poll_quota",
    "poll_quotas",
    "queue_follower_sync",
    "quiet_hours_changed",
    "quota_cleared",
    "read_access_token",
    "record_token_conflict",
    "record_wechat_error",
    "reencrypt_secrets",
    "run_follower_sync",
    "start_follower_sync",
    "sync_followers",
    "update_follower_profile",
]
