"""Simulated users: follow, scan a QR code, unfollow and write a text message.

Each method changes the state as WeChat would and returns the account and the event XML; the HTTP layer
(``sandbox.server``) pushes that XML to the account's callback URL.
"""

from __future__ import annotations

from sandbox.callbacks import event_xml
from sandbox.state.accounts import Account
from sandbox.state.errors import SandboxError
from sandbox.state.qrcodes import QrCodesMixin


class SimulationMixin(QrCodesMixin):
    def simulate_subscribe(
        self, appid: str, openid: str, *, ticket: str | None = None, scene: str | None = None
    ) -> tuple[Account, str]:
        """Follow (again), optionally through a QR code; returns the account and the event XML to push."""
        with self.lock:
            account = self._simulated_account(appid, openid)
            if ticket is not None:
                scene = self._ticket_scene(account, ticket)
            account.subscribe(openid, scene)
            elements: list[tuple[str, str | int]] = [("MsgType", "event"), ("Event", "subscribe")]
            elements.append(("EventKey", f"qrscene_{scene}" if scene is not None else ""))
            if ticket is not None:
                elements.append(("Ticket", ticket))
            return account, event_xml(account.original_id, openid, elements)

    def simulate_scan(self, appid: str, openid: str, ticket: str) -> tuple[Account, str]:
        """A QR scan: a follower sends SCAN with the bare scene, anyone else subscribes with ``qrscene_``."""
        with self.lock:
            account = self._simulated_account(appid, openid)
            scene = self._ticket_scene(account, ticket)
            if not account.is_following(openid):
                return self.simulate_subscribe(appid, openid, ticket=ticket)
            elements: list[tuple[str, str | int]] = [
                ("MsgType", "event"),
                ("Event", "SCAN"),
                ("EventKey", scene),
                ("Ticket", ticket),
            ]
            return account, event_xml(account.original_id, openid, elements)

    def simulate_unsubscribe(self, appid: str, openid: str) -> tuple[Account, str]:
        with self.lock:
            account = self._simulated_account(appid, openid)
            account.unsubscribe(openid)
            elements: list[tuple[str, str | int]] = [("MsgType", "event"), ("Event", "unsubscribe"), ("EventKey", "")]
            return account, event_xml(account.original_id, openid, elements)

    def simulate_text(self, appid: str, openid: str, content: str) -> tuple[Account, str]:
        with self.lock:
            account = self._simulated_account(appid, openid)
            if not account.is_following(openid):
                raise SandboxError(43004)
            elements: list[tuple[str, str | int]] = [
                ("MsgType", "text"),
                ("Content", content),
                ("MsgId", next(self._ids)),
            ]
            return account, event_xml(account.original_id, openid, elements)

    def _simulated_account(self, appid: str, openid: str) -> Account:
        account = self.accounts.get(appid)
        if account is None:
            raise SandboxError(40013)
        if not openid:
            raise SandboxError(40003)
        return account

    def _ticket_scene(self, account: Account, ticket: str) -> str:
        found = self.qr_ticket(ticket)
        if found is None or found.appid != account.appid:
            raise SandboxError(40097, "invalid args: unknown or expired ticket")
        return found.scene
