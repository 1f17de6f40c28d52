"""Subscription notifications (订阅通知): the public template library, each account's added templates, the users'
consent (one-time credits and long-term grants) and ``/cgi-bin/message/subscribe/bizsend``.

* Library (``sandbox.subscription_library``): ``getcategory`` lists the account's categories (every library
  category unless its spec names ``subscription_categories``); ``getpubtemplatetitles`` pages the titles of the
  given categories; ``getpubtemplatekeywords`` lists a title's keywords.
* Added templates: ``addtemplate`` (tid, 2 to 5 kids in order, sceneDesc ≤ 15) returns a new ``priTmplId``; the
  template's content names each keyword ``<rule><kid>`` as WeChat does (``会议时间:{{time2.DATA}}``); 25 at most
  (200012).  ``gettemplate`` lists them, with ``keywordEnumValueList`` for enumerated keywords; ``deltemplate``
  removes one (and the consent held for it).
* Consent: ``grant_credit`` adds one-time credits for (openid, priTmplId), ``grant_long_term`` a long-term grant,
  ``refuse`` takes both away (a "reject" in the popup or in the user's settings).  ``simulate_subscribe_popup``
  plays the H5 popup (``POST /sandbox/simulate/subscribe_popup``): it changes them and returns the
  ``subscribe_msg_popup_event`` to push to the account's callback; ``POST /sandbox/subscriptions/grant`` and
  ``/refuse`` and ``GET /sandbox/subscriptions/credits`` expose them without an event.
* ``bizsend``: the template must be the account's (40037), the values must fit their rules (47003, with WeChat's
  ``data.<key>.value invalid``), and the user must hold consent: a one-time template consumes one credit, a
  long-term one needs a long-term grant; without, 43101.  Recipients need not follow the account.  Each delivery
  is kept for ``GET /sandbox/subscriptions/messages`` and answered with a msgid (as the Mini Program variant of the
  API does; without one when ``Faults.bizsend_msgid`` is off), and reported to the account's callback as a
  ``subscribe_msg_sent_event`` (``sandbox.state.receipts``; ``Faults.sent_event_error_code`` makes it a failure).
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from sandbox.callbacks import subscription_event_xml
from sandbox.state.accounts import Account
from sandbox.state.errors import SandboxError
from sandbox.state.receipts import ReceiptsMixin
from sandbox.state.sends import NON_ASCII_ESCAPE_RE
from sandbox.state.subscription_templates import (
    SUBSCRIPTION_TEMPLATES_MAX,
    TITLES_PAGE_MAX,
    SubscriptionTemplate,
    build_subscription_template,
)
from sandbox.state.tokens import TokensMixin
from sandbox.subscription_library import LONG_TERM, TITLES, TITLES_BY_TID


class SubscriptionsMixin(ReceiptsMixin, TokensMixin):
    """The library APIs, the account templates, consent and bizsend (the lock guards them like everything else)."""

    # (appid, openid, priTmplId) → one-time credits left; and the long-term grants.
    subscription_credits: dict[tuple[str, str, str], int]
    long_term_grants: set[tuple[str, str, str]]
    subscription_messages: deque[dict[str, Any]]

    def _reset_subscriptions(self) -> None:
        self.subscription_credits = {}
        self.long_term_grants = set()
        self.subscription_messages = deque(maxlen=self.message_capacity)

    # --- the public library ----------------------------------------------------------------------

    def subscription_categories(self, access_token: str | None) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            return {"errcode": 0, "errmsg": "ok", "data": [dict(item) for item in account.subscription_categories]}

    def public_titles(self, access_token: str | None, query: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            raw_ids = query.get("ids", "")
            if not raw_ids:
                raise self._fail(account, 200018)
            parts = raw_ids.split(",")
            own = {item["id"] for item in account.subscription_categories}
            if not all(part.isdigit() and int(part) in own for part in parts):
                raise self._fail(account, 200019)
            start, limit = query.get("start", ""), query.get("limit", "")
            if not start.isdigit():
                raise self._fail(account, 200016)
            if not limit.isdigit() or not 1 <= int(limit) <= TITLES_PAGE_MAX:
                raise self._fail(account, 200017)
            wanted = {int(part) for part in parts}
            found = [title for title in TITLES if title["categoryId"] in wanted]
            page = found[int(start) : int(start) + int(limit)]
            data = [
                {"tid": t["tid"], "title": t["title"], "type": t["type"], "categoryId": str(t["categoryId"])}
                for t in page
            ]
            return {"errcode": 0, "errmsg": "ok", "count": len(found), "data": data}

    def public_keywords(self, access_token: str | None, query: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            tid = query.get("tid", "")
            title = TITLES_BY_TID.get(int(tid)) if tid.isdigit() else None
            if title is None:
                raise self._fail(account, 200014)
            data = [{key: keyword[key] for key in ("kid", "name", "example", "rule")} for keyword in title["keywords"]]
            return {"errcode": 0, "errmsg": "ok", "count": len(data), "data": data}

    # --- the account's templates -------------------------------------------------------------------

    def add_subscription_template(self, access_token: str | None, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            tid = str(body.get("tid", ""))
            kid_list = body.get("kidList")
            scene_desc = body.get("sceneDesc")
            if not tid.isdigit() or int(tid) not in TITLES_BY_TID:
                raise self._fail(account, 200014)
            title = TITLES_BY_TID[int(tid)]
            if title["categoryId"] not in {item["id"] for item in account.subscription_categories}:
                raise self._fail(account, 200014)
            if not isinstance(kid_list, list) or not all(isinstance(kid, int) for kid in kid_list):
                raise self._fail(account, 200020)
            if not isinstance(scene_desc, str):
                raise self._fail(account, 200021)
            if len(account.subscription_templates) >= SUBSCRIPTION_TEMPLATES_MAX:
                raise self._fail(account, 200012)
            try:
                template = build_subscription_template(int(tid), kid_list, scene_desc)
            except ValueError as exc:
                raise self._fail(account, 200020 if str(exc) == "kidList" else 200021) from None
            account.subscription_templates[template.pri_tmpl_id] = template
            return {"errcode": 0, "errmsg": "ok", "priTmplId": template.pri_tmpl_id}

    def list_subscription_templates(self, access_token: str | None) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            data = [template.as_api() for template in account.subscription_templates.values()]
            return {"errcode": 0, "errmsg": "ok", "data": data}

    def delete_subscription_template(self, access_token: str | None, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            pri_tmpl_id = str(body.get("priTmplId") or "")
            # WeChat's answer for an unknown id is undocumented; the sandbox answers "invalid template_id".
            if account.subscription_templates.pop(pri_tmpl_id, None) is None:
                raise self._fail(account, 40037)
            for key in [key for key in self.subscription_credits if key[0] == account.appid and key[2] == pri_tmpl_id]:
                del self.subscription_credits[key]
            self.long_term_grants = {key for key in self.long_term_grants if key[2] != pri_tmpl_id}
            return {"errcode": 0, "errmsg": "ok"}

    # --- consent ---------------------------------------------------------------------------------

    def _template_of(self, appid: str, pri_tmpl_id: str) -> SubscriptionTemplate:
        template = self.accounts[appid].subscription_templates.get(pri_tmpl_id)
        if template is None:
            raise ValueError(f"{appid} has no subscription template {pri_tmpl_id}")
        return template

    def grant_credit(self, appid: str, openid: str, pri_tmpl_id: str, count: int = 1) -> int:
        """``openid`` accepted one-time template ``pri_tmpl_id`` ``count`` times (each popup "accept" is one);
        returns the credits now held."""
        if not openid or count < 1:
            raise ValueError("an openid and a count of at least 1 are needed")
        with self.lock:
            self._template_of(appid, pri_tmpl_id)
            key = (appid, openid, pri_tmpl_id)
            self.subscription_credits[key] = self.subscription_credits.get(key, 0) + count
            return self.subscription_credits[key]

    def grant_long_term(self, appid: str, openid: str, pri_tmpl_id: str) -> None:
        """``openid`` accepted long-term template ``pri_tmpl_id``: sends need no credit until refused."""
        if not openid:
            raise ValueError("an openid is needed")
        with self.lock:
            if self._template_of(appid, pri_tmpl_id).type != LONG_TERM:
                raise ValueError(f"{pri_tmpl_id} is a one-time template: grant credits instead")
            self.long_term_grants.add((appid, openid, pri_tmpl_id))

    def refuse(self, appid: str, openid: str, pri_tmpl_id: str) -> None:
        """``openid`` rejected ``pri_tmpl_id`` (popup or settings): credits and grant are gone."""
        with self.lock:
            self._template_of(appid, pri_tmpl_id)
            self.subscription_credits.pop((appid, openid, pri_tmpl_id), None)
            self.long_term_grants.discard((appid, openid, pri_tmpl_id))

    def simulate_subscribe_popup(self, appid: str, openid: str, choices: list[tuple[str, bool]]) -> tuple[Account, str]:
        """The user acts on an H5 subscribe popup (``PopupScene`` 1): each (priTmplId, accepted) changes the consent
        as WeChat would (an accepted one-time template adds one credit, a long-term one grants, a rejection takes
        both away); returns the account and the ``subscribe_msg_popup_event`` to push.  Unknown templates: 40037,
        nothing changed."""
        if not choices:
            raise SandboxError(47001, "data format error: no template in the popup")
        with self.lock:
            account = self.accounts.get(appid)
            if account is None:
                raise SandboxError(40013)
            if not openid:
                raise SandboxError(40003)
            templates = {}
            for pri_tmpl_id, _accepted in choices:
                template = account.subscription_templates.get(pri_tmpl_id)
                if template is None:
                    raise SandboxError(40037)
                templates[pri_tmpl_id] = template
            items = []
            for pri_tmpl_id, accepted in choices:
                if not accepted:
                    self.refuse(appid, openid, pri_tmpl_id)
                elif templates[pri_tmpl_id].type == LONG_TERM:
                    self.grant_long_term(appid, openid, pri_tmpl_id)
                else:
                    self.grant_credit(appid, openid, pri_tmpl_id)
                status = "accept" if accepted else "reject"
                items.append([("TemplateId", pri_tmpl_id), ("SubscribeStatusString", status), ("PopupScene", 1)])
            xml = subscription_event_xml(
                account.original_id, openid, "subscribe_msg_popup_event", "SubscribeMsgPopupEvent", items
            )
            return account, xml

    def credits(self, appid: str, openid: str | None = None) -> list[dict[str, Any]]:
        """The consent held for ``appid``'s templates (one user's when ``openid`` is given), by openid and template."""
        with self.lock:
            found: dict[tuple[str, str], dict[str, Any]] = {}
            for (key_appid, key_openid, pri), count in self.subscription_credits.items():
                if key_appid == appid and openid in (None, key_openid):
                    found.setdefault((key_openid, pri), {"credits": 0, "long_term": False})["credits"] = count
            for key_appid, key_openid, pri in self.long_term_grants:
                if key_appid == appid and openid in (None, key_openid):
                    found.setdefault((key_openid, pri), {"credits": 0, "long_term": False})["long_term"] = True
            return [
                {"openid": key_openid, "template_id": pri, **held} for (key_openid, pri), held in sorted(found.items())
            ]

    # --- bizsend -----------------------------------------------------------------------------------

    def send_subscription(self, access_token: str | None, body: bytes) -> dict[str, Any]:
        """/cgi-bin/message/subscribe/bizsend: the template, the values, then the user's consent (see module)."""
        payload: Any = None
        parse_error: int | None = None
        if b"\\u" in body and NON_ASCII_ESCAPE_RE.search(body):
            parse_error = 40033
        else:
            try:
                payload = json.loads(body)
            except ValueError:
                parse_error = 47001
            if not isinstance(payload, dict):
                parse_error = 47001
        with self.lock:
            account = self.authenticate(access_token)
            account.counters.subscription_sends += 1
            if parse_error is not None:
                raise self._fail(account, parse_error)
            touser = str(payload.get("touser") or "")
            if not touser:
                raise self._fail(account, 40003)
            template = account.subscription_templates.get(str(payload.get("template_id") or ""))
            if template is None:
                raise self._fail(account, 40037)
            problem = template.data_problem(payload.get("data"))
            if problem is not None:
                raise self._fail(account, 47003, problem)
            self._consume_consent(account, touser, template)
            msgid = next(self._ids)
            self.subscription_messages.append(
                {
                    "msgid": msgid,
                    "appid": account.appid,
                    "touser": touser,
                    "template_id": template.pri_tmpl_id,
                    "data": payload.get("data"),
                    "page": payload.get("page"),
                    "miniprogram": payload.get("miniprogram"),
                    "time": time.time(),
                }
            )
            self._queue_subscription_receipt(account, touser, template.pri_tmpl_id, msgid)
            if not self.faults.bizsend_msgid:
                return {"errcode": 0, "errmsg": "ok"}
            return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    def _consume_consent(self, account: Account, touser: str, template: SubscriptionTemplate) -> None:
        key = (account.appid, touser, template.pri_tmpl_id)
        if template.type == LONG_TERM:
            if key not in self.long_term_grants:
                raise self._fail(account, 43101)
            return
        held = self.subscription_credits.get(key, 0)
        if held < 1:
            raise self._fail(account, 43101)
        if held == 1:
            del self.subscription_credits[key]
        else:
            self.subscription_credits[key] = held - 1

    def list_subscription_messages(self, appid: str | None = None, touser: str | None = None) -> list[dict[str, Any]]:
        """Delivered subscription notifications, oldest first."""
        with self.lock:
            return [
                message
                for message in self.subscription_messages
                if (appid is None or message["appid"] == appid) and (touser is None or message["touser"] == touser)
            ]
