"""Channel-layer group names, in one place. Names use only [a-z0-9.-] as layers require."""

from __future__ import annotations

from uuid import UUID

CHANNELS = ("portfolio", "trades", "oversight", "market")
# Channels that belong to one agent (its events share the agent's ``seq``).
AGENT_CHANNELS = ("portfolio", "trades", "oversight")


def agent_group(agent_id: UUID | str, channel: str) -> str:
    """Subscribers of one agent's channel (portfolio, trades or oversight)."""
    return f"agent.{agent_id}.{channel}"


def agent_control_group(agent_id: UUID | str) -> str:
    """Every subscriber of any of one agent's channels: events all of them must see.

    ``agent.terminated`` is published on ``portfolio`` and also sent here, so a client that
    only watches the agent's ``trades`` learns that the agent is gone.
    """
    return f"agent.{agent_id}.control"


def oversight_feed_group() -> str:
    """Operators watching every approval request."""
    return "oversight.all"


def market_group(symbol: str | None = None) -> str:
    """Market ticks: of every symbol, or of one."""
    return f"market.{symbol.lower()}" if symbol else "market.all"
