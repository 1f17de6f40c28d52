"""The token authority: handing an account's access_token to the other services of the company, on record.

Every system that fetches tokens with an AppSecret of its own knocks out the tokens of the others (``40001``); with
wxnotify as the one owner, the others read the token here instead.  The token comes from the same token manager the
sends use, so a read that needs a fresher token goes through the same single-flight lock: readers and senders
together cause one fetch.  Each read is recorded (:class:`accounts.models.AccessTokenRead`, and an entry of the audit
log that points to it); the token never is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from accounts.clients import wechat_client_for
from accounts.models import AccessTokenRead, OfficialAccount
from audit.models import AuditEvent
from audit.services import record

# A caller may ask for a token valid this long at most: WeChat issues tokens for 7,200 s and stable_token replaces
# one only in its last 5 minutes, so anything longer could never be honoured.
MAX_MIN_TTL = 7000
# Without min_ttl a caller gets a token good for 5 minutes at least, like the one our own sends use.
DEFAULT_MIN_TTL = 300


@dataclass(frozen=True)
class TokenGrant:
    """What a reader gets: the token (never in a repr), its expiry, and whether WeChat was asked for it."""

    access_token: str = field(repr=False)
    expires_at: datetime
    refreshed: bool


def read_access_token(
    *, account: OfficialAccount, user: AbstractBaseUser, address: str | None, min_ttl: int = DEFAULT_MIN_TTL
) -> TokenGrant:
    """The access_token of ``account`` with at least ``min_ttl`` seconds left where WeChat can give one, and a
    record of the read.

    A token is fetched only when the shared one has ``min_ttl`` seconds or less left.  With stable_token in normal
    mode WeChat keeps answering the current token until its last 5 minutes, so a read asking for more than the
    current token has left may get it back unchanged: ``expires_at`` always says what the token is good for.
    Raises :class:`wxnotify.wechat.errors.WeChatError` when no token can be had; then nothing is recorded.
    """
    client = wechat_client_for(account)
    token, refreshed = client.token_manager.get_token_valid_for(client, float(min_ttl))
    expires_at = datetime.fromtimestamp(token.expires_at, tz=UTC)
    with transaction.atomic():
        token_read = AccessTokenRead.objects.create(
            account=account,
            user=user,
            username=user.get_username(),
            address=address,
            min_ttl=min_ttl,
            refreshed=refreshed,
            expires_at=expires_at,
        )
        record(
            AuditEvent.TOKEN_READ,
            target=account,
            details={"read": token_read.pk, "min_ttl": min_ttl, "refreshed": refreshed, "expires_at": expires_at},
            actor=user,
        )
    return TokenGrant(access_token=token.value, expires_at=expires_at, refreshed=refreshed)
