"""Quota and reporting windows, aligned to UTC exactly as the metering service aligns them."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

HOURLY = "hourly"
DAILY = "daily"
WEEKLY = "weekly"
MONTHLY = "monthly"
PERIODS = (HOURLY, DAILY, WEEKLY, MONTHLY)
REPORT_PERIODS = (DAILY, WEEKLY, MONTHLY)
# The unit of each window in prose: "10000 per day".
PERIOD_UNITS = {HOURLY: "hour", DAILY: "day", WEEKLY: "week", MONTHLY: "month"}


def period_window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC window ``[start, end)`` of ``period`` that contains ``now``.

    Hours and days start at :00 / midnight, weeks on Monday (ISO), months on the 1st; this is
    the metering service's own alignment, so local and remote figures cover the same window.
    """
    now = now.astimezone(UTC)
    if period == HOURLY:
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == DAILY:
        return day_start, day_start + timedelta(days=1)
    if period == WEEKLY:
        start = day_start - timedelta(days=now.weekday())
        return start, start + timedelta(days=7)
    if period == MONTHLY:
        start = day_start.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        return start, start + timedelta(days=days)
    raise ValueError(f"unknown period {period!r}; expected one of {PERIODS}")
