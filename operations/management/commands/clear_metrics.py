from django.core.management.base import BaseCommand

from operations.metrics import clear_multiprocess_files


class Command(BaseCommand):
    help = (
        "Empty PROMETHEUS_MULTIPROC_DIR. Run it on a host before its web and qcluster processes start "
        "(e.g. ExecStartPre), never while they run."
    )

    def handle(self, *args, **options) -> None:
        removed = clear_multiprocess_files()
        self.stdout.write(f"Removed {removed} metric file(s) from {self.style.SQL_FIELD('PROMETHEUS_MULTIPROC_DIR')}.")
