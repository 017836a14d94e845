"""Usage recording: the outbox rows written in the transaction of the change they meter.

Every usage event is first a ``UsageEvent`` row written in the transaction of the business
change it meters (an order, a fill, an approval request, an API call), so usage exists exactly
when the change does; ``metering.services.delivery`` sends it later.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from grpc_clients import metering as metering_api
from metering.choices import MetricCode
from metering.models import UsageEvent

if TYPE_CHECKING:
    from agents.models import Agent

# Properties that configure quotas on the metering service: only the server may send them.
RESERVED_PROPERTIES = frozenset({"quota_limit", "quota_period"})


def _whole_quantity(quantity: int | Decimal) -> int:
    """Usage quantities are whole units (trade_volume in whole dollars, rounded half up)."""
    if isinstance(quantity, Decimal):
        return int(quantity.to_integral_value(rounding=ROUND_HALF_UP))
    return int(quantity)


def server_transaction_id(*parts: object) -> str:
    """The outbox id of one of the server's own usage events: ``server:`` and ``parts``.

    A client's ids are stored as ``client:<agent id>:<id>`` (``client_transaction_id``), so no
    request can write an id of this form: derived from a row the business change creates
    (a trade id) or fresh (``uuid4``), it cannot meet another row's, and the server's writes
    to the outbox never fail on a duplicate id.
    """
    return ":".join(["server", *(str(part) for part in parts)])


def client_transaction_id(*, agent_id, client_id: str) -> str:
    """The outbox (and wire) id of a client's usage event: scoped to its agent, so that two
    tenants' ids never meet at the metering service, and never of the server's form."""
    return f"client:{agent_id}:{client_id}"


def usage_record(
    *,
    agent: Agent,
    code: str,
    quantity: int | Decimal,
    event_type: str = "api_call",
    symbol: str = "",
    properties: dict[str, Any] | None = None,
    transaction_id: str | None = None,
    occurred_at: datetime | None = None,
) -> UsageEvent:
    """Write one of the server's usage events to the outbox, inside the caller's transaction.

    The row commits or rolls back with the business change that caused it, and is delivered
    later by ``usage_deliver_pending``. ``event_type`` must be a lower-case Creto
    ``UsageEventType`` name; ``quantity`` must not be negative (a ``Decimal`` is rounded to
    whole units). ``transaction_id`` is a ``server_transaction_id`` (a fresh one by default):
    no other row can hold it, so the insert cannot fail the caller's transaction on it.
    """
    event = usage_build(
        agent=agent,
        code=code,
        quantity=quantity,
        event_type=event_type,
        symbol=symbol,
        properties=properties,
        transaction_id=transaction_id,
        occurred_at=occurred_at,
    )
    # Skipping the lookups (the agent is a loaded row) keeps the hot path to one INSERT.
    event.save(force_insert=True)
    return event


def usage_build(
    *,
    agent: Agent,
    code: str,
    quantity: int | Decimal,
    event_type: str = "api_call",
    symbol: str = "",
    properties: dict[str, Any] | None = None,
    transaction_id: str | None = None,
    occurred_at: datetime | None = None,
) -> UsageEvent:
    """An unsaved usage event: what ``usage_record`` saves, and what ``usage_bulk_record``
    saves many of at once.

    ``event_type`` must be a lower-case Creto ``UsageEventType`` name; ``quantity`` must not be
    negative (a ``Decimal`` is rounded to whole units). The agent is not looked up again.
    The server's own events are made of its metric codes and of rows it has validated, so
    their fields are not validated again one by one; a client's event is
    (``usage_event_submit``).
    """
    if event_type not in metering_api.USAGE_EVENT_TYPES:
        raise ValidationError({"event_type": [f"Unknown event type {event_type!r}."]})
    event = UsageEvent(
        transaction_id=transaction_id or server_transaction_id(uuid.uuid4().hex),
        agent=agent,
        event_type=event_type,
        code=code,
        quantity=_whole_quantity(quantity),
        symbol=symbol or "",
        properties={str(k): str(v) for k, v in (properties or {}).items()},
        occurred_at=occurred_at or timezone.now(),
    )
    if event.quantity < 0:
        raise ValidationError({"quantity": ["Quantity must not be negative."]})
    return event


def usage_bulk_record(events: list[UsageEvent]) -> None:
    """Write events built by ``usage_build`` to the outbox in one INSERT, inside the caller's
    transaction. Their ``transaction_id`` values are ``server_transaction_id``s derived from a
    row created in this transaction (or fresh), which no other row can hold."""
    UsageEvent.objects.bulk_create(events)


def api_call_usage(request) -> dict:
    """``usage_build`` arguments of the ``api_calls`` event that ``request`` counts for."""
    route = getattr(getattr(request, "resolver_match", None), "route", "") or ""
    return {
        "code": MetricCode.API_CALLS,
        "quantity": 1,
        "event_type": "api_call",
        "properties": {"method": request.method, "route": route},
    }


def api_call_record(*, agent_id, request) -> UsageEvent:
    """Count one ``api_calls`` unit for an authenticated request made for an agent.

    The caller (``metering.middleware``) has established from the answer that the agent exists
    and is visible to the user; this is then a single INSERT in autocommit.
    """
    event = UsageEvent(
        transaction_id=server_transaction_id(uuid.uuid4().hex),
        agent_id=agent_id,
        occurred_at=timezone.now(),
        **api_call_usage(request),
    )
    event.save(force_insert=True)
    return event


@dataclass(frozen=True)
class SubmittedUsage:
    transaction_id: str  # the client's id, as it sent it (or as it was given one)
    status: str  # "accepted" or "duplicate"
    event: UsageEvent | None


def usage_event_submit(
    *,
    agent: Agent,
    event_type: str,
    code: str,
    quantity: int,
    transaction_id: str | None = None,
    properties: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> SubmittedUsage:
    """Accept a client-reported usage event into the outbox, idempotently by transaction_id.

    The client's ``transaction_id`` (a fresh one when it sends none) is scoped to the agent:
    one already recorded *for this agent* answers ``duplicate`` and writes nothing (also when
    two identical submissions race); the same id on another agent, another tenant's included,
    is a different event and tells nothing about it. The row's outbox id is
    ``client_transaction_id(...)``, which never has the form of the server's own ids.
    Quota-configuring properties are refused: only the server sets an agent's limits.
    """
    reserved = RESERVED_PROPERTIES.intersection(properties or {})
    if reserved:
        raise ValidationError(
            {"properties": [f"Reserved properties may not be set: {', '.join(sorted(reserved))}."]}
        )
    client_id = transaction_id or uuid.uuid4().hex
    mine = UsageEvent.objects.filter(agent=agent, client_transaction_id=client_id)
    if mine.exists():
        return SubmittedUsage(client_id, "duplicate", None)
    event = usage_build(
        agent=agent,
        code=code,
        quantity=quantity,
        event_type=event_type,
        properties=properties,
        transaction_id=client_transaction_id(agent_id=agent.pk, client_id=client_id),
        occurred_at=timestamp,
    )
    event.client_transaction_id = client_id
    event.full_clean(exclude=["agent"], validate_unique=False, validate_constraints=False)
    try:
        # A savepoint: a racing twin's row makes this insert fail, not the request.
        with transaction.atomic():
            event.save(force_insert=True)
    except IntegrityError:
        if mine.exists():
            return SubmittedUsage(client_id, "duplicate", None)
        raise
    return SubmittedUsage(client_id, "accepted", event)
