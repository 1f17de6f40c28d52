"""Followers through the API: user/get (paged), user/info and user/info/batchget."""

from __future__ import annotations

from typing import Any

from sandbox.state.errors import SandboxError
from sandbox.state.tokens import TokensMixin

BATCHGET_MAX = 100


class UsersMixin(TokensMixin):
    def follower_page(self, access_token: str | None, next_openid: str) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            account.counters.count_user_call("user/get")
            try:
                page, next_value = account.follower_page(next_openid)
            except SandboxError as exc:
                raise self._fail(account, exc.errcode) from None
            reply: dict[str, Any] = {"total": account.follower_count, "count": len(page)}
            if page:
                reply["data"] = {"openid": page}
            reply["next_openid"] = next_value
            return reply

    def user_info(self, access_token: str | None, openid: str) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            account.counters.count_user_call("user/info")
            follower = account.followers.get(openid)
            if follower is None:
                raise self._fail(account, 40003)
            return follower.as_info()

    def batch_user_info(self, access_token: str | None, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            account.counters.count_user_call("user/info/batchget")
            user_list = body.get("user_list")
            if not isinstance(user_list, list) or not 1 <= len(user_list) <= BATCHGET_MAX:
                raise self._fail(account, 40032)
            infos = []
            for item in user_list:
                openid = str(item.get("openid") or "") if isinstance(item, dict) else ""
                follower = account.followers.get(openid)
                if follower is None:
                    raise self._fail(account, 40003)
                infos.append(follower.as_info())
            return {"user_info_list": infos}
