"""django-auditlog's ``auditlogflush`` would empty the audit log (with ``--truncate`` even past the ORM): refused.

This app comes before ``auditlog`` in INSTALLED_APPS, so this command is the one ``manage.py auditlogflush`` runs.
The log is append-only (``audit.models``); pruning old entries, should it ever be needed, is a command of its own
that records its run in the log before it deletes anything.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Refused: the audit log is append-only (see docs/security.md, 'The audit log')."

    def add_arguments(self, parser) -> None:
        # django-auditlog's options, accepted so that its usual command lines get this refusal, not a usage error.
        parser.add_argument("-y", "--yes", action="store_true")
        parser.add_argument("-b", "--before-date")
        parser.add_argument("-t", "--truncate", action="store_true")

    def handle(self, *args, **options) -> None:
        raise CommandError("The audit log is append-only: auditlogflush is disabled (docs/security.md).")
