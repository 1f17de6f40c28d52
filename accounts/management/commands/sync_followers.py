"""Sync followers of one or all active official accounts from WeChat, with a progress bar."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from accounts.models import OfficialAccount
from accounts.services import run_follower_sync, start_follower_sync


class Command(BaseCommand):
    help = "Fetch the follower list and details from WeChat and update our followers (bindings are kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--appid", help="Only this account (default: every active account).")

    def handle(self, *args, **options) -> None:
        if options["appid"]:
            accounts = list(OfficialAccount.objects.filter(appid=options["appid"]))
            if not accounts:
                raise CommandError(f"No official account with AppID {options['appid']}.")
        else:
            accounts = list(OfficialAccount.objects.filter(is_active=True))
        failures = []
        for account in accounts:
            failure = self.sync_one(account, show_progress=options["verbosity"] > 0)
            if failure:
                failures.append(f"{account}: {failure}")
        if failures:
            raise CommandError("Follower sync failed:\n" + "\n".join(failures))

    def sync_one(self, account: OfficialAccount, *, show_progress: bool) -> str | None:
        """Sync one account and report; return why it failed, or None."""
        sync = start_follower_sync(account)
        if sync is None:
            return "a follower sync is already running"
        with tqdm(desc=account.appid, unit=" followers", disable=not show_progress, file=self.stderr) as bar:

            def progress(processed: int, total: int) -> None:
                bar.total = total
                bar.update(processed - bar.n)

            result = run_follower_sync(sync, progress=progress)
        if result is None:
            return sync.error
        self.stdout.write(
            self.style.SUCCESS(
                f"{account}: {result.total} followers at WeChat; {result.created} new, {result.updated} updated, "
                f"{result.unsubscribed} marked unsubscribed."
            )
        )
        return None
