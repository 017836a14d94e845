"""``manage.py expire_approvals``: expire pending approval requests past their deadline."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from trades.services import approvals_expire_report


class Command(BaseCommand):
    help = (
        "Expire every pending approval request whose expires_at has passed: the request "
        "becomes 'expired', its trade 'expired' and the trade's reservation is released. "
        "The running server does this every few seconds; use this when it is not running."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--now",
            help="Treat this ISO 8601 time as now (e.g. 2030-01-01T00:00:00Z); default: now.",
        )

    def handle(self, *args, **options):
        now = timezone.now()
        if options["now"]:
            now = parse_datetime(options["now"])
            if now is None:
                raise CommandError(f"--now must be an ISO 8601 date-time, got {options['now']!r}")
            if timezone.is_naive(now):
                now = timezone.make_aware(now, timezone.UTC)
        report = approvals_expire_report(now=now)
        summary = f"Expired {report.expired} approval request(s); {report.failed} failed."
        if report.failed:
            raise CommandError(summary + " See the log for the failures.")
        self.stdout.write(self.style.SUCCESS(summary))
