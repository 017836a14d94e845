"""``manage.py deliver_usage``: send the usage outbox to the metering service now."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from metering.services import usage_deliver_pending


class Command(BaseCommand):
    help = (
        "Deliver pending usage events from the local outbox to the metering service "
        "(IngestEventBatch, idempotent by transaction_id) until none is left or delivery "
        "fails. Exits non-zero when events could not be delivered."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=100,
            help="Events per IngestEventBatch call (default 100).",
        )
        parser.add_argument(
            "--respect-backoff",
            action="store_true",
            help="Skip events whose retry time has not come yet (default: send them now).",
        )

    def handle(self, *args, **options):
        batch_size = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        totals = {"delivered": 0, "duplicates": 0, "rejected": 0}
        while True:
            report = usage_deliver_pending(
                limit=batch_size * 10,
                batch_size=batch_size,
                ignore_backoff=not options["respect_backoff"],
            )
            for key in totals:
                totals[key] += report[key]
            progressed = report["delivered"] + report["duplicates"] + report["rejected"]
            if report["error"] or report["retrying"] or not progressed or not report["remaining"]:
                break
        summary = (
            f"Delivered {totals['delivered']} usage event(s), {totals['duplicates']} already "
            f"known, {totals['rejected']} rejected; {report['remaining']} pending."
        )
        if report["error"]:
            raise CommandError(
                f"{summary} The metering service at {settings.METERING_GRPC_ADDRESS} failed: "
                f"{report['error']}"
            )
        if report["retrying"]:
            raise CommandError(f"{summary} Some events could not be ingested; retry later.")
        self.stdout.write(self.style.SUCCESS(summary))
