"""Publishing live events: persisted with the change that causes them, sent after commit.

``publish_agent_event`` must run inside the transaction of the business change. It takes the
agent's next ``seq`` (an atomic increment on the agent row), stores the event in the agent's
bounded buffer (``AgentEvent``) and registers a ``transaction.on_commit`` callback that sends it
to the channel layer. A rolled-back transaction therefore neither sends nor keeps anything, and
a client that missed events can replay them from the buffer by ``seq``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F

from config.metrics import CHANNEL_LAYER_DROPPED
from realtime.groups import agent_group, market_group, oversight_feed_group

logger = logging.getLogger("trading_demo.realtime")

# Events that operators watching the global `oversight` feed also receive.
OVERSIGHT_FEED_EVENTS = {"approval.requested", "approval.completed"}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _plain(data: Any) -> Any:
    """Serialize now (before commit) to plain JSON types: Decimal → str, UUID → str, …"""
    import json

    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def publish_agent_event(*, agent_id: UUID | str, event: str, channel: str, data: dict) -> int:
    """Persist an agent event with its next ``seq`` and send it once the transaction commits.

    Returns the ``seq``. Must be called inside ``transaction.atomic``.
    """
    from agents.models import Agent
    from realtime.models import AgentEvent

    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("publish_agent_event must run inside the business transaction")
    Agent.objects.filter(pk=agent_id).update(event_seq=F("event_seq") + 1)
    seq = Agent.objects.filter(pk=agent_id).values_list("event_seq", flat=True).get()
    payload = _plain(data)
    AgentEvent.objects.create(
        agent_id=agent_id, seq=seq, event=event, channel=channel, data=payload
    )
    message = {
        "type": "agent.event",
        "event": event,
        "channel": channel,
        "agent_id": str(agent_id),
        "data": payload,
        "timestamp": _now(),
        "seq": seq,
    }
    groups = [agent_group(agent_id, channel)]
    if event in OVERSIGHT_FEED_EVENTS:
        groups.append(oversight_feed_group())
    transaction.on_commit(lambda: _send(groups, message))
    return seq


def publish_market_price(
    *, symbol: str, price: Any, seq: int, timestamp: str | None = None
) -> None:
    """Send a ``market.price`` tick to subscribers of all symbols and of this symbol."""
    message = {
        "type": "market.event",
        "event": "market.price",
        "channel": "market",
        "agent_id": None,
        "data": {"symbol": symbol, "price": str(price)},
        "timestamp": timestamp or _now(),
        "seq": seq,
    }
    _send([market_group(), market_group(symbol)], message)


def _send(groups: list[str], message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for group in groups:
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            # The channel layer is best effort: clients resync from the buffer by seq.
            CHANNEL_LAYER_DROPPED.inc()
            logger.warning("could not publish %s to %s", message.get("event"), group, exc_info=True)
