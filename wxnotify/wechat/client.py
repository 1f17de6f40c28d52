"""HTTP client for the WeChat Official Account API.

The send path is hot (about 1,000 sends/s per host from 64 threads), so the client keeps per-call work small:
one pooled ``requests.Session`` per process, the JSON body encoded once, the access_token taken from an
in-process memo in the token manager, and no proxy/netrc lookups per request.

Size: over 450 lines of one short method per WeChat endpoint around one call path (token, retries on an
expired token, error taxonomy); splitting by endpoint family would scatter that shared path.
"""

from __future__ import annotations

import functools
import json as jsonlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError

from wxnotify.log import register_secret
from wxnotify.wechat.errors import (
    ConfigurationError,
    NetworkError,
    TokenInvalidError,
    TokenSourceError,
    error_from_reply,
)
from wxnotify.wechat.subscriptions import (
    SUBSCRIPTION_TITLES_PAGE_MAX,
    SubscriptionCategory,
    SubscriptionKeyword,
    SubscriptionTitle,
    SubscriptionTitlePage,
    validate_category_ids,
    validate_kid_list,
    validate_scene_desc,
    validate_tid,
)
from wxnotify.wechat.tokens import AccessToken, AccessTokenManager, Credentials, default_token_manager

logger = logging.getLogger("wxnotify.wechat")

JSON_CONTENT_TYPE = {"Content-Type": "application/json; charset=utf-8"}
BATCH_USER_INFO_MAX = 100
QRCODE_MAX_EXPIRE_SECONDS = 2_592_000
QRCODE_SCENE_STR_MAX = 64
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


_session: requests.Session | None = None
_session_pid: int | None = None
_session_lock = threading.Lock()


def _reset_session_after_fork() -> None:
    """A forked child must not share the parent's sockets, nor inherit a lock held by another parent thread."""
    global _session, _session_pid, _session_lock
    _session, _session_pid, _session_lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_reset_session_after_fork)


def shared_session() -> requests.Session:
    """The process-wide pooled session; rebuilt when the process id changes (after a fork)."""
    global _session, _session_pid
    pid = os.getpid()
    session = _session
    if session is not None and _session_pid == pid:
        return session
    with _session_lock:
        if _session is None or _session_pid != pid:
            session = requests.Session()
            # Proxies are resolved once per API base (see _proxies_for) instead of from the environment per call.
            session.trust_env = False
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=settings.WECHAT_HTTP_POOL_SIZE, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            _session, _session_pid = session, pid
        return _session


@functools.lru_cache(maxsize=16)
def _proxies_for(api_base: str) -> dict[str, str]:
    return requests.utils.get_environ_proxies(api_base)


def is_allowed_source_url(url: str) -> bool:
    """Whether an external token source may be asked at ``url``: https, or http to this host (a local sidecar),
    since the answer is a token and the request carries the shared secret."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


def encode_json(payload: Any) -> bytes:
    """UTF-8 JSON without \\uXXXX escapes (WeChat answers those with 40033) and without spaces."""
    return jsonlib.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _items(data: Any) -> list[dict[str, Any]]:
    """The objects of a reply's list; WeChat sometimes sends one object where a list is documented."""
    items = data if isinstance(data, list) else [data]
    return [item for item in items if isinstance(item, dict)]


def _sent_before_failure(exc: requests.RequestException) -> bool:
    """Whether the request certainly never reached WeChat (connect failed), so a retry cannot duplicate it."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = exc.args[0]
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        return isinstance(reason, NewConnectionError)
    return False


class WeChatClient:
    """Calls the WeChat API for one account; the token manager owns the access_token."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        token_manager: AccessTokenManager | None = None,
        api_base: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.credentials = credentials
        register_secret(credentials.secret)
        register_secret(credentials.source_secret)
        self.token_manager = token_manager if token_manager is not None else default_token_manager()
        self._api_base = api_base.rstrip("/") if api_base else None
        self._session = session

    def __repr__(self) -> str:
        return f"<WeChatClient appid={self.credentials.appid}>"

    @property
    def api_base(self) -> str:
        return self._api_base or settings.WECHAT_API_BASE

    # --- transport -------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None,
        body: bytes | None,
        token_request: bool = False,
    ) -> dict:
        """One HTTP exchange; returns the decoded reply or raises a classified :class:`WeChatError`."""
        api_base = self.api_base
        session = self._session or shared_session()
        try:
            response = session.request(
                method,
                api_base + path,
                params=params,
                data=body,
                headers=JSON_CONTENT_TYPE if body is not None else None,
                timeout=(settings.WECHAT_CONNECT_TIMEOUT, settings.WECHAT_READ_TIMEOUT),
                proxies=_proxies_for(api_base),
            )
        except requests.RequestException as exc:
            # Our own message, and no chained cause: requests' messages contain the URL with the token.
            error = NetworkError(f"{type(exc).__name__} calling {path}", outcome_unknown=not _sent_before_failure(exc))
            self._log_failure(method, path, error)
            raise error from None
        if response.status_code >= 500:
            error = NetworkError(f"HTTP {response.status_code} from {path}", outcome_unknown=True)
            self._log_failure(method, path, error)
            raise error
        if response.status_code >= 400:
            error = ConfigurationError(f"HTTP {response.status_code} from {path}; check WECHAT_API_BASE")
            self._log_failure(method, path, error)
            raise error
        try:
            reply = jsonlib.loads(response.content)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            error = NetworkError(f"unreadable reply from {path}", outcome_unknown=True)
            self._log_failure(method, path, error)
            raise error
        errcode = reply.get("errcode") or 0
        if errcode:
            error = error_from_reply(int(errcode), str(reply.get("errmsg", "")), token_request=token_request)
            self._log_failure(method, path, error)
            raise error
        return reply

    def _log_failure(self, method: str, path: str, error: Exception) -> None:
        logger.warning(
            "WeChat call %s %s failed for %s: errcode=%s errmsg=%s",
            method,
            path,
            self.credentials.appid,
            getattr(error, "errcode", None),
            getattr(error, "errmsg", ""),
        )

    # --- access_token ----------------------------------------------------------------------------

    def fetch_access_token(self, *, force_refresh: bool = False) -> AccessToken:
        """Fetch a token from WeChat (or the account's external source), bypassing every cache; only the token
        manager should call this."""
        credentials = self.credentials
        if credentials.token_endpoint == "external":
            return self._fetch_from_source()
        if credentials.token_endpoint == "classic":
            reply = self._request(
                "GET",
                "/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": credentials.appid, "secret": credentials.secret},
                body=None,
                token_request=True,
            )
        else:
            body = encode_json(
                {
                    "grant_type": "client_credential",
                    "appid": credentials.appid,
                    "secret": credentials.secret,
                    "force_refresh": force_refresh,
                }
            )
            reply = self._request("POST", "/cgi-bin/stable_token", params=None, body=body, token_request=True)
        value = reply.get("access_token")
        if not value:
            raise NetworkError("token reply without access_token", outcome_unknown=True)
        register_secret(value)
        now = time.time()
        return AccessToken(value=value, expires_at=now + float(reply.get("expires_in", 7200)), fetched_at=now)

    def _fetch_from_source(self) -> AccessToken:
        """Read the token from the account's external token authority; any failure is a :class:`TokenSourceError`
        that names what went wrong but neither the URL (it may carry a key) nor the shared secret."""
        url, secret = self.credentials.source_url, self.credentials.source_secret
        if not is_allowed_source_url(url):
            raise self._source_failed("its URL must be https (http only to this host)")
        session = self._session or shared_session()
        try:
            response = session.get(
                url,
                headers={"Authorization": f"Bearer {secret}", "Accept": "application/json"},
                timeout=(settings.WECHAT_CONNECT_TIMEOUT, settings.WECHAT_READ_TIMEOUT),
                proxies=_proxies_for(url),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise self._source_failed(f"{type(exc).__name__} calling it") from None
        if response.status_code != 200:
            raise self._source_failed(f"it answered HTTP {response.status_code}")
        try:
            reply = jsonlib.loads(response.content)
            value, expires_in = reply["access_token"], float(reply["expires_in"])
        except (ValueError, TypeError, KeyError):
            raise self._source_failed("its answer is not {access_token, expires_in}") from None
        if not isinstance(value, str) or not value or expires_in <= 0:
            raise self._source_failed("its answer holds no usable access_token")
        register_secret(value)
        now = time.time()
        return AccessToken(value=value, expires_at=now + expires_in, fetched_at=now)

    def _source_failed(self, what: str) -> TokenSourceError:
        error = TokenSourceError(f"The external token source of {self.credentials.appid} gave no token: {what}")
        logger.warning("%s", error.errmsg)
        return error

    # --- authenticated calls ---------------------------------------------------------------------

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> dict:
        """Call an API with the account's access_token; on a token-invalid reply refresh it and retry once."""
        body = encode_json(json) if json is not None else None
        manager = self.token_manager
        token = manager.get_token(self)
        try:
            return self._request(method, path, params=self._with_token(params, token), body=body)
        except TokenInvalidError as exc:
            token = manager.refresh(self, failed_token=token, errcode=exc.errcode)
        try:
            return self._request(method, path, params=self._with_token(params, token), body=body)
        except TokenInvalidError as exc:
            raise ConfigurationError(
                f"{exc.errmsg} (again, right after a refresh: another system may be fetching access_tokens for "
                f"this AppID with /cgi-bin/token, which invalidates ours)",
                errcode=exc.errcode,
            ) from None

    @staticmethod
    def _with_token(params: Mapping[str, Any] | None, token: str) -> dict[str, Any]:
        if params:
            return {**params, "access_token": token}
        return {"access_token": token}

    # --- business methods ------------------------------------------------------------------------

    def send_template_message(
        self,
        *,
        touser: str,
        template_id: str,
        data: Mapping[str, Any],
        url: str | None = None,
        miniprogram: Mapping[str, str] | None = None,
        client_msg_id: str | None = None,
    ) -> int:
        """Send a template message and return WeChat's msgid (a 64-bit integer).

        ``data`` values may be plain strings or ``{"value": ...}``; only the value is sent, since WeChat stopped
        rendering per-keyword colours in 2023.
        """
        payload: dict[str, Any] = {
            "touser": touser,
            "template_id": template_id,
            "data": {
                key: {"value": value["value"] if isinstance(value, Mapping) else value} for key, value in data.items()
            },
        }
        if url:
            payload["url"] = url
        if miniprogram:
            payload["miniprogram"] = dict(miniprogram)
        if client_msg_id:
            payload["client_msg_id"] = client_msg_id
        reply = self.call("POST", "/cgi-bin/message/template/send", json=payload)
        return int(reply["msgid"])

    def get_all_private_templates(self) -> list[dict]:
        reply = self.call("GET", "/cgi-bin/template/get_all_private_template")
        return reply.get("template_list", [])

    def get_followers(self, next_openid: str | None = None) -> dict:
        """One page (≤10,000 openids) of the follower list."""
        return self.call("GET", "/cgi-bin/user/get", params={"next_openid": next_openid} if next_openid else None)

    def get_user_info(self, openid: str, lang: str = "zh_CN") -> dict:
        return self.call("GET", "/cgi-bin/user/info", params={"openid": openid, "lang": lang})

    def batch_get_user_info(self, openids: list[str], lang: str = "zh_CN") -> list[dict]:
        """User info for up to 100 openids in one call (WeChat's limit)."""
        if len(openids) > BATCH_USER_INFO_MAX:
            raise ValueError(f"batch_get_user_info takes at most {BATCH_USER_INFO_MAX} openids, got {len(openids)}")
        if not openids:
            return []
        body = {"user_list": [{"openid": openid, "lang": lang} for openid in openids]}
        reply = self.call("POST", "/cgi-bin/user/info/batchget", json=body)
        return reply.get("user_info_list", [])

    def create_qrcode(self, *, scene_str: str, expire_seconds: int | None = None, permanent: bool = False) -> dict:
        """Create a string-scene QR code; returns WeChat's ``ticket``, ``expire_seconds`` and ``url``."""
        if not 1 <= len(scene_str) <= QRCODE_SCENE_STR_MAX:
            raise ValueError(f"scene_str must be 1 to {QRCODE_SCENE_STR_MAX} characters")
        payload: dict[str, Any] = {"action_info": {"scene": {"scene_str": scene_str}}}
        if permanent:
            if expire_seconds is not None:
                raise ValueError("a permanent QR code has no expire_seconds")
            payload["action_name"] = "QR_LIMIT_STR_SCENE"
        else:
            payload["action_name"] = "QR_STR_SCENE"
            if expire_seconds is not None:
                if not 1 <= expire_seconds <= QRCODE_MAX_EXPIRE_SECONDS:
                    raise ValueError(f"expire_seconds must be 1 to {QRCODE_MAX_EXPIRE_SECONDS}")
                payload["expire_seconds"] = expire_seconds
        return self.call("POST", "/cgi-bin/qrcode/create", json=payload)

    # --- WeChat's own ledger: quotas, request records, intercepted messages ------------------------

    def get_api_quota(self, cgi_path: str) -> dict[str, int]:
        """Today's ``daily_limit``, ``used`` and ``remain`` of one API (``/cgi-bin/openapi/quota/get``)."""
        reply = self.call("POST", "/cgi-bin/openapi/quota/get", json={"cgi_path": cgi_path})
        quota = reply.get("quota") or {}
        return {name: int(quota.get(name) or 0) for name in ("daily_limit", "used", "remain")}

    def clear_quota(self) -> None:
        """Reset every API quota of the account (``/cgi-bin/clear_quota``); WeChat allows 10 a month (48006)."""
        self.call("POST", "/cgi-bin/clear_quota", json={"appid": self.credentials.appid})

    def get_rid_info(self, rid: str) -> dict[str, Any]:
        """What WeChat recorded of the failed call ``rid`` (``/cgi-bin/openapi/rid/get``): its ``request``, with
        ``invoke_time``, ``cost_in_ms``, ``request_url``, ``request_body``, ``response_body`` and ``client_ip``.
        The record holds the access_token of that call: mask it (``wxnotify.wechat.records``) before showing it."""
        reply = self.call("POST", "/cgi-bin/openapi/rid/get", json={"rid": rid})
        request = reply.get("request")
        return request if isinstance(request, dict) else {}

    def query_blocked_template_messages(self, *, template_id: str, largest_id: int = 0, limit: int = 100) -> list[dict]:
        """One page (≤100) of the template messages WeChat intercepted for ``template_id`` with a record id above
        ``largest_id`` (``/wxa/sec/queryblocktmplmsg``).  The documentation shows ``msginfo`` as one object; a
        list is accepted too."""
        body = {"tmpl_msg_id": template_id, "largest_id": largest_id, "limit": limit}
        reply = self.call("POST", "/wxa/sec/queryblocktmplmsg", json=body)
        info = reply.get("msginfo") or []
        return [item for item in (info if isinstance(info, list) else [info]) if isinstance(item, dict)]

    # --- subscription notifications (订阅通知): template library, account templates, bizsend ------------------------
    # docs/wechat-api.md §4.2-4.3; the paths and fields follow WeChat's "订阅通知" API page
    # (https://developers.weixin.qq.com/doc/offiaccount/Subscription_Messages/api.html) as wechatpy's
    # client/api/template.py and silenceper's officialaccount/message/subscribe.go call them.

    def get_subscription_categories(self) -> list[SubscriptionCategory]:
        """The service categories the account has set (``/wxaapi/newtmpl/getcategory``): the public library is
        browsed by them."""
        reply = self.call("GET", "/wxaapi/newtmpl/getcategory")
        return [
            SubscriptionCategory(id=int(item["id"]), name=str(item.get("name") or ""))
            for item in _items(reply.get("data"))
            if str(item.get("id", "")).isdigit()
        ]

    def get_public_subscription_titles(
        self, category_ids: Sequence[int], *, start: int = 0, limit: int = SUBSCRIPTION_TITLES_PAGE_MAX
    ) -> SubscriptionTitlePage:
        """One page of the public template library in ``category_ids`` (``/wxaapi/newtmpl/getpubtemplatetitles``).

        ``start`` counts from 0 and ``limit`` is at most 30 (WeChat's 200016/200017 otherwise); ``count`` in the
        page is the total the categories hold, for paging.
        """
        ids = validate_category_ids(category_ids)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError("start must be a whole number from 0")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= SUBSCRIPTION_TITLES_PAGE_MAX:
            raise ValueError(f"limit must be 1 to {SUBSCRIPTION_TITLES_PAGE_MAX}")
        params = {"ids": ",".join(str(value) for value in ids), "start": start, "limit": limit}
        reply = self.call("GET", "/wxaapi/newtmpl/getpubtemplatetitles", params=params)
        titles = [
            SubscriptionTitle(
                tid=int(item["tid"]),
                title=str(item.get("title") or ""),
                type=int(item.get("type") or 0),
                category_id=int(item.get("categoryId") or 0),
            )
            for item in _items(reply.get("data"))
            if str(item.get("tid", "")).isdigit()
        ]
        return SubscriptionTitlePage(count=int(reply.get("count") or 0), titles=titles)

    def get_public_subscription_keywords(self, tid: int) -> list[SubscriptionKeyword]:
        """The keywords a library title offers (``/wxaapi/newtmpl/getpubtemplatekeywords``): ``kid``, name,
        example and ``rule`` (the value type: thing, time, …), from which ``addtemplate`` picks 2 to 5."""
        reply = self.call("GET", "/wxaapi/newtmpl/getpubtemplatekeywords", params={"tid": validate_tid(tid)})
        return [
            SubscriptionKeyword(
                kid=int(item["kid"]),
                name=str(item.get("name") or ""),
                example=str(item.get("example") or ""),
                rule=str(item.get("rule") or ""),
            )
            for item in _items(reply.get("data"))
            if str(item.get("kid", "")).isdigit()
        ]

    def add_subscription_template(self, tid: int, kid_list: Sequence[int], scene_desc: str) -> str:
        """Add library title ``tid`` with the keywords ``kid_list`` (2 to 5, in display order) to the account and
        return its ``priTmplId`` (``/wxaapi/newtmpl/addtemplate``).  ``scene_desc`` (≤ 15 characters) tells WeChat's
        reviewers where the notification is used.  The arguments are checked first: WeChat's answers to bad ones
        (200014, 200020, 200021) say less."""
        body = {
            "tid": str(validate_tid(tid)),
            "kidList": validate_kid_list(kid_list),
            "sceneDesc": validate_scene_desc(scene_desc),
        }
        reply = self.call("POST", "/wxaapi/newtmpl/addtemplate", json=body)
        pri_tmpl_id = str(reply.get("priTmplId") or "")
        if not pri_tmpl_id:
            raise NetworkError("addtemplate reply without priTmplId", outcome_unknown=True)
        return pri_tmpl_id

    def get_subscription_templates(self) -> list[dict[str, Any]]:
        """The account's subscription templates as WeChat lists them (``/wxaapi/newtmpl/gettemplate``): each with
        ``priTmplId``, ``title``, ``content``, ``example``, ``type`` (2 one-time, 3 long-term) and, for enumerated
        keywords, ``keywordEnumValueList``.  Raw dicts, like :meth:`get_all_private_templates`: the sync decides
        what to keep."""
        reply = self.call("GET", "/wxaapi/newtmpl/gettemplate")
        return _items(reply.get("data"))

    def delete_subscription_template(self, pri_tmpl_id: str) -> None:
        """Delete one of the account's subscription templates (``/wxaapi/newtmpl/deltemplate``)."""
        if not isinstance(pri_tmpl_id, str) or not pri_tmpl_id.strip():
            raise ValueError("pri_tmpl_id must be a non-empty string")
        self.call("POST", "/wxaapi/newtmpl/deltemplate", json={"priTmplId": pri_tmpl_id})

    def send_subscription_message(
        self,
        *,
        touser: str,
        template_id: str,
        data: Mapping[str, Any],
        page: str | None = None,
        miniprogram: Mapping[str, str] | None = None,
    ) -> int | None:
        """Send a subscription notification (``/cgi-bin/message/subscribe/bizsend``; the mini-program endpoint
        ``/cgi-bin/message/subscribe/send`` answers an official account 48001).

        ``data`` values may be plain strings or ``{"value": ...}``.  ``page`` is a web page URL, ``miniprogram``
        ``{"appid", "pagepath"}``; with both, phones that can open the mini-program do.  Returns WeChat's msgid when the
        answer holds one: the official-account page documents only errcode/errmsg, the mini-program variant adds a
        msgid, and the ``subscribe_msg_sent_event`` receipt carries ``MsgID`` either way, so callers must also be
        able to match a receipt without it (openid and template).  A 43101 (the user holds
        no credit, or refused) is a :class:`~wxnotify.wechat.errors.ConsentError`: a consent failure, never retried.
        """
        if not touser or not template_id:
            raise ValueError("touser and template_id are required")
        payload: dict[str, Any] = {
            "touser": touser,
            "template_id": template_id,
            "data": {
                key: {"value": value["value"] if isinstance(value, Mapping) else value} for key, value in data.items()
            },
        }
        if page:
            payload["page"] = page
        if miniprogram:
            if not miniprogram.get("appid") or not miniprogram.get("pagepath"):
                raise ValueError("miniprogram needs an appid and a pagepath")
            payload["miniprogram"] = {"appid": miniprogram["appid"], "pagepath": miniprogram["pagepath"]}
        reply = self.call("POST", "/cgi-bin/message/subscribe/bizsend", json=payload)
        msgid = reply.get("msgid")
        return int(msgid) if msgid not in (None, "") else None
