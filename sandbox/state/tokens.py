"""access_token issuing and checking: /cgi-bin/token, /cgi-bin/stable_token, revocation and expiry."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from sandbox.state.accounts import Account
from sandbox.state.base import StateBase
from sandbox.state.errors import SandboxError

# How long a classic token stays valid after the next one was issued.
CLASSIC_OVERLAP_S = 300


@dataclass
class IssuedToken:
    appid: str
    kind: str
    expires_at: float
    revoked: bool = False


class TokensMixin(StateBase):
    """Issues tokens per account and checks the one every authenticated call carries."""

    tokens: dict[str, IssuedToken]
    # Calls refused before an account was known (no, unknown or expired token), by errcode.
    unauthenticated_errors: dict[int, int]

    def _reset_tokens(self) -> None:
        self.tokens = {}
        self.unauthenticated_errors = {}

    def _new_token(self, account: Account, kind: str) -> tuple[str, int]:
        value = f"{next(self._ids) % 100}_{secrets.token_urlsafe(96)}"
        ttl = self.faults.token_ttl
        self.tokens[value] = IssuedToken(account.appid, kind, time.monotonic() + ttl)
        return value, ttl

    def _credentials(self, grant_type: Any, appid: Any, secret: Any) -> Account:
        if grant_type != "client_credential":
            raise SandboxError(40002)
        if not appid:
            raise SandboxError(41002)
        account = self.accounts.get(str(appid))
        if account is None:
            raise SandboxError(40013)
        if not secret:
            raise SandboxError(41004)
        if not secrets.compare_digest(str(secret).encode(), account.secret.encode()):
            raise SandboxError(40125)
        return account

    def issue_classic_token(self, grant_type: Any, appid: Any, secret: Any) -> dict[str, Any]:
        """/cgi-bin/token: always a new token; the previous one lives on for at most 5 more minutes."""
        with self.lock:
            account = self._credentials(grant_type, appid, secret)
            account.counters.token_fetches["token"] += 1
            previous = self.tokens.get(account.classic_token or "")
            if previous is not None:
                previous.expires_at = min(previous.expires_at, time.monotonic() + CLASSIC_OVERLAP_S)
            value, ttl = self._new_token(account, "classic")
            account.classic_token = value
            return {"access_token": value, "expires_in": ttl}

    def issue_stable_token(self, body: dict[str, Any]) -> dict[str, Any]:
        """/cgi-bin/stable_token: the same token until it expires, unless ``force_refresh`` revokes it."""
        with self.lock:
            account = self._credentials(body.get("grant_type"), body.get("appid"), body.get("secret"))
            account.counters.token_fetches["stable_token"] += 1
            current = self.tokens.get(account.stable_token or "")
            now = time.monotonic()
            if body.get("force_refresh") is True and current is not None:
                current.revoked = True
            elif current is not None and not current.revoked and current.expires_at > now:
                return {"access_token": account.stable_token, "expires_in": max(1, int(current.expires_at - now))}
            value, ttl = self._new_token(account, "stable")
            account.stable_token = value
            return {"access_token": value, "expires_in": ttl}

    def authenticate(self, access_token: str | None) -> Account:
        with self.lock:
            if not access_token:
                raise self._count_unauthenticated(SandboxError(41001))
            issued = self.tokens.get(access_token)
            if issued is None or issued.revoked or issued.appid not in self.accounts:
                raise self._count_unauthenticated(SandboxError(40001))
            if issued.expires_at <= time.monotonic():
                raise self._count_unauthenticated(SandboxError(42001))
            return self.accounts[issued.appid]

    def _count_unauthenticated(self, error: SandboxError) -> SandboxError:
        self.unauthenticated_errors[error.errcode] = self.unauthenticated_errors.get(error.errcode, 0) + 1
        return error

    def invalidate_tokens(self, appid: str) -> int:
        """Revoke every token of ``appid`` (next use → 40001), as when another system re-fetches one."""
        with self.lock:
            if appid not in self.accounts:
                raise SandboxError(40013)
            revoked = 0
            for issued in self.tokens.values():
                if issued.appid == appid and not issued.revoked:
                    issued.revoked = True
                    revoked += 1
            return revoked
