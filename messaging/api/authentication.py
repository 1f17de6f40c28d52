"""How API callers prove who they are."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import TokenAuthentication

from wxnotify.memo import memo_key, remember, remembered


class MemoizedTokenAuthentication(TokenAuthentication):
    """DRF's ``Authorization: Token <key>``, remembering for a few seconds whom a key belongs to.

    Services send one request per message, and looking the token and its user up, then the user's permissions,
    was a third of what such a request cost.  The user is memoised with Django's permission caches filled, so the
    model-permission check of the view needs no query either.  A deleted token or a deactivated user is refused
    by every process within the memo's lifetime (see :mod:`wxnotify.memo`); unknown keys are never memoised.
    """

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        cache_key = memo_key("api-token", key)
        found = remembered(cache_key)
        if found is not None:
            return found
        user, token = super().authenticate_credentials(key)
        user.get_all_permissions()
        remember(cache_key, (user, token))
        return user, token
