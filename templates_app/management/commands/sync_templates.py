"""``manage.py sync_templates [--appid APPID]``: fetch template lists from WeChat and report what changed.

Each account's run is recorded by the service like a sync started in the admin, so the admin shows it too.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.models import OfficialAccount
from audit.context import acting_as
from templates_app.models import TemplateSync
from templates_app.services import sync_templates
from wxnotify.wechat.errors import WeChatError, describe_wechat_error


class Command(BaseCommand):
    help = "Sync message templates from WeChat for one account (--appid) or every active account."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--appid", help="Only this account's AppID (default: all active accounts).")

    def handle(self, *args, appid: str | None = None, **options) -> None:
        if appid:
            accounts = list(OfficialAccount.objects.filter(appid=appid))
            if not accounts:
                raise CommandError(f"No official account with AppID {appid}.")
        else:
            accounts = list(OfficialAccount.objects.filter(is_active=True).order_by("name"))
            if not accounts:
                self.stdout.write("No active official accounts.")
                return

        failed = []
        for account in accounts:
            try:
                with acting_as("manage.py sync_templates"):
                    result = sync_templates(account, source=TemplateSync.Source.COMMAND)
            except WeChatError as exc:
                failed.append(account.appid)
                self.stderr.write(self.style.ERROR(f"{account}: {describe_wechat_error(exc)}"))
                continue
            line = f"{account}: {result}"
            self.stdout.write(self.style.SUCCESS(line) if result.changed else line)

        if failed:
            raise CommandError(
                f"Template sync failed for {len(failed)} of {len(accounts)} account(s): {', '.join(failed)}"
            )
