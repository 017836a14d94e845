"""``manage.py reconcile_reservations``: make reservations equal the live orders' holds."""

from __future__ import annotations

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Recompute every agent's reserved cash from its open and pending buys and every "
        "position's reserved shares from its open sells; fix and log any drift."
    )

    def handle(self, *args, **options):
        from trades.services import reservations_reconcile

        report = reservations_reconcile()
        self.stdout.write(
            f"Checked {report.agents_checked} agents: fixed {report.agents_fixed} agents, "
            f"{report.positions_fixed} positions, {report.trades_fixed} ended orders."
        )
