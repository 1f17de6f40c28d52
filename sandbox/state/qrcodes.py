"""Parametric QR codes: qrcode/create (temporary and permanent, numeric and string scenes) and their tickets."""

from __future__ import annotations

import base64
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sandbox.state.tokens import TokensMixin

QR_DEFAULT_EXPIRE_S = 60
QR_MAX_EXPIRE_S = 2_592_000
QR_LIMIT_SCENE_MAX = 100_000


@dataclass
class QrTicket:
    appid: str
    scene: str
    expires_at: float | None


class QrCodesMixin(TokensMixin):
    tickets: dict[str, QrTicket]

    def _reset_qrcodes(self) -> None:
        self.tickets = {}

    def create_qrcode(self, access_token: str | None, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            action = body.get("action_name")
            action_info = body.get("action_info")
            scene = action_info.get("scene") if isinstance(action_info, dict) else None
            if not isinstance(scene, dict):
                raise self._fail(account, 40097)
            if action in ("QR_STR_SCENE", "QR_LIMIT_STR_SCENE"):
                value = scene.get("scene_str")
                if not isinstance(value, str) or not 1 <= len(value) <= 64:
                    raise self._fail(account, 40097, "invalid args: scene_str must be 1-64 characters")
            elif action in ("QR_SCENE", "QR_LIMIT_SCENE"):
                value = scene.get("scene_id")
                low, high = (1, QR_LIMIT_SCENE_MAX) if action == "QR_LIMIT_SCENE" else (1, 2**32 - 1)
                if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                    raise self._fail(account, 40097, "invalid args: scene_id out of range")
            else:
                raise self._fail(account, 40097, "invalid args: action_name")
            ticket = base64.b64encode(os.urandom(48)).decode("ascii")
            code = secrets.token_urlsafe(15)
            reply: dict[str, Any] = {"ticket": ticket, "url": f"http://weixin.qq.com/q/{code}"}
            expires_at = None
            if not action.startswith("QR_LIMIT"):
                try:
                    expire_seconds = int(body.get("expire_seconds") or QR_DEFAULT_EXPIRE_S)
                except (TypeError, ValueError):
                    raise self._fail(account, 40097, "invalid args: expire_seconds") from None
                expire_seconds = max(1, min(expire_seconds, QR_MAX_EXPIRE_S))
                reply["expire_seconds"] = expire_seconds
                expires_at = time.time() + expire_seconds
            self.tickets[ticket] = QrTicket(account.appid, str(value), expires_at)
            return reply

    def qr_ticket(self, ticket: str) -> QrTicket | None:
        """The live ticket, or None when unknown or expired."""
        with self.lock:
            found = self.tickets.get(ticket)
            if found is None or (found.expires_at is not None and found.expires_at <= time.time()):
                return None
            return found
