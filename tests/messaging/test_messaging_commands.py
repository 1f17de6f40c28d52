"""Management commands of the messaging app."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import OfficialAccount
from messaging.models import DeliveryReceipt

pytestmark = pytest.mark.django_db


def test_sweep_messages_command_reports_what_it_did():
    account = OfficialAccount.objects.create(name="A", appid="wx00000000000000a1", app_secret="s" * 32, token="t")
    stale = DeliveryReceipt.objects.create(account=account, msgid=99, wechat_status="success")
    DeliveryReceipt.objects.filter(pk=stale.pk).update(received_at=timezone.now() - timedelta(hours=1))
    out = StringIO()
    call_command("sweep_messages", stdout=out)
    assert "receipts unmatched: 1" in out.getvalue()
    assert "recovered: 0" in out.getvalue()
    stale.refresh_from_db()
    assert stale.state == DeliveryReceipt.State.UNMATCHED
