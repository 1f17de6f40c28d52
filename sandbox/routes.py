"""The sandbox's routes: WeChat's API paths, simulated users and the control endpoints, mapped onto the state.

``SandboxApp`` turns (method, path, query, body) into a reply and knows nothing about sockets; ``sandbox.server``
serves it over HTTP.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import requests

from sandbox.callbacks import open_reply, post_callback
from sandbox.state import ApiFault, ReplyDropped, SandboxError, SandboxState

JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
logger = logging.getLogger(__name__)


class Reply:
    """A non-JSON or non-200 answer (JSON dicts returned by routes mean 200 + JSON)."""

    def __init__(self, status: int, body: bytes, content_type: str = JSON_TYPE) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type


class NoReply(Reply):
    """No answer at all (the drop_reply_* faults): the connection is closed, after a hang in ``hang`` mode."""

    def __init__(self, mode: str, hang_ms: int) -> None:
        super().__init__(0, b"")
        self.mode = mode
        self.hang_ms = hang_ms


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object body, or WeChat's 47001 ``data format error``."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        raise SandboxError(47001) from None
    if not isinstance(payload, dict):
        raise SandboxError(47001)
    return payload


def _sleep_ms(milliseconds: int) -> None:
    """The configured latency, outside the state's lock so concurrent callers wait side by side."""
    if milliseconds:
        time.sleep(milliseconds / 1000)


Route = Callable[[dict[str, str], bytes], "dict[str, Any] | Reply"]


class SandboxApp:
    """Maps (method, path) to the state's operations; knows nothing about sockets."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/cgi-bin/token"): self.token,
            ("POST", "/cgi-bin/stable_token"): self.stable_token,
            ("POST", "/cgi-bin/message/template/send"): self.send,
            ("GET", "/cgi-bin/template/get_all_private_template"): self.templates,
            ("GET", "/cgi-bin/user/get"): self.user_get,
            ("GET", "/cgi-bin/user/info"): self.user_info,
            ("POST", "/cgi-bin/user/info/batchget"): self.user_batchget,
            ("POST", "/cgi-bin/qrcode/create"): self.qrcode_create,
            ("GET", "/cgi-bin/showqrcode"): self.showqrcode,
            ("POST", "/cgi-bin/openapi/quota/get"): self.quota_get,
            ("POST", "/cgi-bin/clear_quota"): self.clear_quota,
            ("POST", "/cgi-bin/openapi/rid/get"): self.rid_get,
            ("POST", "/wxa/sec/queryblocktmplmsg"): self.query_blocked,
            ("GET", "/wxaapi/newtmpl/getcategory"): self.subscription_categories,
            ("GET", "/wxaapi/newtmpl/getpubtemplatetitles"): self.public_titles,
            ("GET", "/wxaapi/newtmpl/getpubtemplatekeywords"): self.public_keywords,
            ("POST", "/wxaapi/newtmpl/addtemplate"): self.add_subscription_template,
            ("GET", "/wxaapi/newtmpl/gettemplate"): self.subscription_templates,
            ("POST", "/wxaapi/newtmpl/deltemplate"): self.delete_subscription_template,
            ("POST", "/cgi-bin/message/subscribe/bizsend"): self.subscription_send,
            ("POST", "/sandbox/simulate/subscribe"): self.simulate_subscribe,
            ("POST", "/sandbox/simulate/scan"): self.simulate_scan,
            ("POST", "/sandbox/simulate/unsubscribe"): self.simulate_unsubscribe,
            ("POST", "/sandbox/simulate/text"): self.simulate_text,
            ("POST", "/sandbox/simulate/subscribe_popup"): self.simulate_subscribe_popup,
            ("GET", "/sandbox/state"): self.control_state,
            ("GET", "/sandbox/messages"): self.control_messages,
            ("GET", "/sandbox/sends"): self.control_sends,
            ("POST", "/sandbox/reset"): self.control_reset,
            ("POST", "/sandbox/faults"): self.control_faults,
            ("POST", "/sandbox/tokens/invalidate"): self.control_invalidate,
            ("POST", "/sandbox/accounts"): self.control_accounts,
            ("POST", "/sandbox/api_faults"): self.control_api_faults,
            ("POST", "/sandbox/block"): self.control_block,
            ("POST", "/sandbox/subscriptions/grant"): self.control_grant,
            ("POST", "/sandbox/subscriptions/refuse"): self.control_refuse,
            ("GET", "/sandbox/subscriptions/credits"): self.control_credits,
            ("GET", "/sandbox/subscriptions/messages"): self.control_subscription_messages,
        }

    def handle(self, method: str, target: str, body: bytes, content_type: str = "", source: str = "") -> Reply:
        """Answer one request from the address ``source``.  A WeChat API request is first logged, then answered by
        its API fault if one is queued (see ``sandbox.state.api_faults``), else by its route."""
        path, _, query_string = target.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        fault = None
        if not path.startswith("/sandbox/"):
            self.state.record_request(method, path, query, body, content_type, source)
            fault = self.state.take_api_fault(path)
            if fault is not None and fault.answers:
                _sleep_ms(fault.delay_ms)
                return self._fault_reply(fault, path, query, body)
        try:
            return self._route(method, path, query, body)
        finally:
            if fault is not None:
                _sleep_ms(fault.delay_ms)

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
        route = self.routes.get((method, path))
        if route is None:
            return Reply(404, json_bytes({"errcode": -1, "errmsg": f"sandbox: no such API {method} {path}"}))
        try:
            result = route(query, body)
        except SandboxError as exc:
            result = exc.as_reply()
        except ReplyDropped as exc:
            return NoReply(exc.mode, exc.hang_ms)
        except (ValueError, TypeError, KeyError) as exc:
            result = Reply(400, json_bytes({"errcode": 40097, "errmsg": f"invalid args: {exc}"}))
        except Exception:
            # A sandbox bug must not look like a dropped connection to the client under test.
            logger.exception("sandbox failed on %s %s", method, path)
            result = Reply(500, json_bytes({"errcode": -1, "errmsg": "system error"}))
        if isinstance(result, Reply):
            return result
        if result.get("errcode"):
            self.state.record_failed_call(path, query, body, result)
        return Reply(200, json_bytes(result))

    def _fault_reply(self, fault: ApiFault, path: str, query: dict[str, str], body: bytes) -> Reply:
        if fault.drop is not None:
            return NoReply(fault.drop, self.state.faults.drop_reply_hang_ms)
        if fault.errcode is not None:
            reply = SandboxError(fault.errcode).as_reply()
            self.state.record_failed_call(path, query, body, reply)
            return Reply(200, json_bytes(reply))
        # WeChat itself labels its JSON text/plain; a proxy's error page is text too.
        return Reply(fault.status or 200, (fault.body or "").encode("utf-8"), TEXT_TYPE)

    # --- WeChat API -----------------------------------------------------------------------------

    def token(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.issue_classic_token(query.get("grant_type"), query.get("appid"), query.get("secret"))

    def stable_token(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.issue_stable_token(parse_json(body))

    def send(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        try:
            return self.state.send_template(query.get("access_token"), body)
        finally:
            _sleep_ms(self.state.faults.latency_ms)

    def templates(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.private_templates(query.get("access_token"))

    def user_get(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        try:
            return self.state.follower_page(query.get("access_token"), query.get("next_openid", ""))
        finally:
            _sleep_ms(self.state.faults.user_latency_ms)

    def user_info(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        try:
            return self.state.user_info(query.get("access_token"), query.get("openid", ""))
        finally:
            _sleep_ms(self.state.faults.user_latency_ms)

    def user_batchget(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        try:
            self.state.authenticate(query.get("access_token"))
            return self.state.batch_user_info(query.get("access_token"), parse_json(body))
        finally:
            _sleep_ms(self.state.faults.user_latency_ms)

    def quota_get(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.quota_get(query.get("access_token"), parse_json(body))

    def clear_quota(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.clear_quota(query.get("access_token"), parse_json(body))

    def rid_get(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.rid_get(query.get("access_token"), parse_json(body))

    def query_blocked(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.query_blocked(query.get("access_token"), parse_json(body))

    def subscription_categories(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.subscription_categories(query.get("access_token"))

    def public_titles(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.public_titles(query.get("access_token"), query)

    def public_keywords(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.public_keywords(query.get("access_token"), query)

    def add_subscription_template(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.add_subscription_template(query.get("access_token"), parse_json(body))

    def subscription_templates(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.list_subscription_templates(query.get("access_token"))

    def delete_subscription_template(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.delete_subscription_template(query.get("access_token"), parse_json(body))

    def subscription_send(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        try:
            return self.state.send_subscription(query.get("access_token"), body)
        finally:
            _sleep_ms(self.state.faults.latency_ms)

    def qrcode_create(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        self.state.authenticate(query.get("access_token"))
        return self.state.create_qrcode(query.get("access_token"), parse_json(body))

    def showqrcode(self, query: dict[str, str], body: bytes) -> Reply:
        """A placeholder image naming the scene: enough for the demo to show "scan this"."""
        ticket = self.state.qr_ticket(query.get("ticket", ""))
        if ticket is None:
            return Reply(404, json_bytes({"errcode": 40097, "errmsg": "invalid args: unknown or expired ticket"}))
        scene = html.escape(ticket.scene)
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" width="240" height="240" viewBox="0 0 240 240">'
            '<rect width="240" height="240" fill="#fff" stroke="#000" stroke-width="8"/>'
            '<rect x="20" y="20" width="50" height="50"/><rect x="170" y="20" width="50" height="50"/>'
            '<rect x="20" y="170" width="50" height="50"/>'
            '<text x="120" y="115" font-size="14" text-anchor="middle" font-family="sans-serif">sandbox QR</text>'
            f'<text x="120" y="140" font-size="12" text-anchor="middle" font-family="monospace">{scene}</text>'
            "</svg>"
        )
        return Reply(200, svg.encode("utf-8"), "image/svg+xml")

    # --- simulated users: push the event now and hand back what the service answered ----------

    def _push(self, simulated: tuple[Any, str], openid: str) -> dict[str, Any]:
        account, xml = simulated
        target = account.callback_target()
        reply: dict[str, Any] = {"errcode": 0, "errmsg": "ok", "event": xml, "status": None, "body": None}
        if target is None:
            reply["error"] = "account has no callback_url"
            return reply
        try:
            response = post_callback(None, target, openid, xml)
        except requests.RequestException as exc:
            reply["error"] = f"callback unreachable: {type(exc).__name__}"
            return reply
        reply.update(status=response.status_code, body=response.text, reply=open_reply(target, response.text))
        return reply

    def simulate_subscribe(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        payload = parse_json(body)
        appid, openid = str(payload.get("appid", "")), str(payload.get("openid", ""))
        # ``event_key`` may be given as WeChat shows it (``qrscene_<scene>``) or as the bare scene.
        scene = payload.get("scene", payload.get("event_key"))
        if isinstance(scene, str):
            scene = scene.removeprefix("qrscene_")
        simulated = self.state.simulate_subscribe(
            appid, openid, ticket=payload.get("ticket"), scene=None if scene is None else str(scene)
        )
        return self._push(simulated, openid)

    def simulate_scan(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        payload = parse_json(body)
        openid = str(payload.get("openid", ""))
        return self._push(
            self.state.simulate_scan(str(payload.get("appid", "")), openid, str(payload.get("ticket", ""))), openid
        )

    def simulate_unsubscribe(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        payload = parse_json(body)
        openid = str(payload.get("openid", ""))
        return self._push(self.state.simulate_unsubscribe(str(payload.get("appid", "")), openid), openid)

    def simulate_text(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        payload = parse_json(body)
        openid = str(payload.get("openid", ""))
        simulated = self.state.simulate_text(str(payload.get("appid", "")), openid, str(payload.get("content", "")))
        return self._push(simulated, openid)

    def simulate_subscribe_popup(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        """``{"appid", "openid", "templates": [{"priTmplId": …, "status": "accept" | "reject"}, …]}``: the user's
        choices in an H5 subscribe popup, applied to the consent and pushed as ``subscribe_msg_popup_event``."""
        payload = parse_json(body)
        openid = str(payload.get("openid", ""))
        templates = payload.get("templates")
        if not isinstance(templates, list) or not all(isinstance(item, dict) for item in templates):
            raise SandboxError(47001, "data format error: templates must be a list of objects")
        choices = []
        for item in templates:
            status = str(item.get("status", "")).lower()
            if status not in {"accept", "reject"}:
                raise SandboxError(47001, "data format error: status must be accept or reject")
            choices.append((str(item.get("priTmplId", "")), status == "accept"))
        simulated = self.state.simulate_subscribe_popup(str(payload.get("appid", "")), openid, choices)
        return self._push(simulated, openid)

    # --- inspection and control -------------------------------------------------------------------

    def control_state(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.snapshot()

    def control_messages(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        limit = int(query["limit"]) if query.get("limit") else None
        messages = self.state.list_messages(query.get("appid") or None, query.get("touser") or None, limit)
        return {"count": len(messages), "messages": messages}

    def control_sends(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        """Every send the sandbox handled (delivered, de-duplicated, redelivered or failed), oldest first."""
        limit = int(query["limit"]) if query.get("limit") else None
        since = float(query["since"]) if query.get("since") else None
        sends = self.state.list_sends(query.get("appid") or None, since, limit)
        return {"count": len(sends), "sends": sends}

    def control_reset(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        self.state.reset()
        return {"errcode": 0, "errmsg": "ok"}

    def control_faults(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return {"errcode": 0, "errmsg": "ok", "faults": self.state.set_faults(**parse_json(body))}

    def control_invalidate(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        revoked = self.state.invalidate_tokens(str(parse_json(body).get("appid", "")))
        return {"errcode": 0, "errmsg": "ok", "revoked": revoked}

    def control_accounts(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        account = self.state.upsert_account(parse_json(body))
        return {"errcode": 0, "errmsg": "ok", "appid": account.appid, "followers": account.follower_count}

    def control_api_faults(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        """Queue an API fault: ``{"api": "/cgi-bin/…", "errcode": …}`` and the other fields of ``ApiFault``."""
        fault = self.state.add_api_fault(**parse_json(body))
        return {"errcode": 0, "errmsg": "ok", "api_fault": fault.as_dict()}

    def control_grant(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        """A user's consent to a subscription template, as the popup would give it: ``{"appid", "openid",
        "template_id", "count": 1}`` adds one-time credits, ``"long_term": true`` a long-term grant."""
        payload = parse_json(body)
        appid, openid = str(payload.get("appid", "")), str(payload.get("openid", ""))
        template_id = str(payload.get("template_id", ""))
        if payload.get("long_term"):
            self.state.grant_long_term(appid, openid, template_id)
        else:
            self.state.grant_credit(appid, openid, template_id, int(payload.get("count", 1)))
        return {"errcode": 0, "errmsg": "ok", "credits": self.state.credits(appid, openid)}

    def control_refuse(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        """A user's "reject" of a subscription template: ``{"appid", "openid", "template_id"}``."""
        payload = parse_json(body)
        appid, openid = str(payload.get("appid", "")), str(payload.get("openid", ""))
        self.state.refuse(appid, openid, str(payload.get("template_id", "")))
        return {"errcode": 0, "errmsg": "ok", "credits": self.state.credits(appid, openid)}

    def control_credits(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        credits = self.state.credits(query.get("appid", ""), query.get("openid") or None)
        return {"errcode": 0, "errmsg": "ok", "credits": credits}

    def control_subscription_messages(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        messages = self.state.list_subscription_messages(query.get("appid") or None, query.get("touser") or None)
        return {"count": len(messages), "messages": messages}

    def control_block(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        """Make a delivered message one WeChat intercepted: ``{"appid": …, "msgid": …}``."""
        payload = parse_json(body)
        record = self.state.block_message(str(payload.get("appid", "")), int(payload["msgid"]))
        return {"errcode": 0, "errmsg": "ok", "blocked": record}
