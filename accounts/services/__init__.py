"""Actions on official accounts and their followers.

One module per job: :mod:`.credentials` (checking an account's credentials, recording WeChat's errors on it),
:mod:`.followers` (the follower sync and profile fetches), :mod:`.keys` (re-encrypting secrets under a new key).
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

__all__ = [
    "FOLLOWER_SYNC_TIMEOUT",
    "FollowerSyncResult",
    "KeyRotationReport",
    "check_connection",
    "flag_unreadable_secret",
    "queue_follower_sync",
    "record_wechat_error",
    "reencrypt_secrets",
    "run_follower_sync",
    "start_follower_sync",
    "sync_followers",
    "update_follower_profile",
]
