"""The channel layer of the embedded default (one process, no Redis)."""

from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer


class LocalChannelLayer(InMemoryChannelLayer):
    """Channels' in-memory layer, with its sweep for expired messages run at most once a second.

    ``InMemoryChannelLayer`` walks every channel and every group membership on each receive
    and each group send. Every WebSocket connection receives on its own channel, so a message
    to a group of N connections cost N sweeps of N channels: with 1,000 clients on the market
    stream, a million steps per tick, and the server stopped answering (README,
    "Performance"). Messages and memberships still expire, up to a second late.
    """

    SWEEP_INTERVAL_SECONDS = 1.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._swept_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < self.SWEEP_INTERVAL_SECONDS:
            return
        self._swept_at = now
        super()._clean_expired()
