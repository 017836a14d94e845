"""``config.lean`` stores and loads what the ORM does, on the database the suite runs on."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError
from django.db.models import Model
from django.utils import timezone

from agents.models import PortfolioSnapshot, Position
from config import lean
from metering.models import UsageEvent
from trades.models import Trade

pytestmark = pytest.mark.django_db


def stored(obj: Model) -> dict:
    """The row of ``obj`` as the ORM reads it back, field by field."""
    row = type(obj).objects.get(pk=obj.pk)
    fields = [f for f in row._meta.concrete_fields if not f.primary_key]
    return {f.attname: getattr(row, f.attname) for f in fields}


def order(agent, **fields) -> Trade:
    values = {"agent": agent, "symbol": "AAPL", "side": "buy", "quantity": Decimal("1.5")}
    return Trade(**(values | fields))


def test_an_insert_stores_what_save_stores(agent_factory):
    agent = agent_factory()
    metadata = {"strategy": "momentum", "confidence": 0.75, "tags": ["a", "é"]}
    saved = order(agent, limit_price=Decimal("10.25"), metadata=metadata, type="limit")
    saved.save(force_insert=True)
    inserted = order(agent, limit_price=Decimal("10.25"), metadata=metadata, type="limit")

    lean.insert([inserted])

    # the auto_now_add / auto_now stamps were set on the object and stored
    assert inserted.created_at is not None and inserted.updated_at is not None
    got, expected = stored(inserted), stored(saved)
    for stamp in ("created_at", "updated_at"):
        assert got.pop(stamp) == getattr(inserted, stamp)
        expected.pop(stamp)
    assert got == expected
    assert got["metadata"] == metadata and got["limit_price"] == Decimal("10.25")
    assert not inserted._state.adding


def test_an_insert_of_several_rows_reads_back_each_generated_key(agent_factory):
    agent = agent_factory()
    events = [
        UsageEvent(
            agent=agent,
            code="api_calls",
            quantity=index,
            transaction_id=f"t-{index}",
            occurred_at=timezone.now(),
        )
        for index in range(3)
    ]

    lean.insert(events)

    assert all(event.pk is not None for event in events)
    assert [UsageEvent.objects.get(pk=event.pk).transaction_id for event in events] == [
        "t-0",
        "t-1",
        "t-2",
    ]


def test_an_update_writes_the_named_fields_and_stamps_auto_now(agent_factory):
    agent = agent_factory()
    position = Position.objects.create(agent=agent, symbol="AAPL", quantity=Decimal("2"))
    before = position.updated_at
    position.quantity = Decimal("5")
    position.cost_basis = Decimal("99.00")  # not named: stays as stored

    lean.update(position, ["quantity", "updated_at"])

    row = Position.objects.get(pk=position.pk)
    assert row.quantity == Decimal("5") and row.cost_basis == Decimal("0")
    assert row.updated_at == position.updated_at >= before


def test_save_inserts_a_new_object_and_updates_a_loaded_one(agent_factory):
    agent = agent_factory()
    count = PortfolioSnapshot.objects.count()
    snapshot = PortfolioSnapshot(
        agent=agent,
        timestamp=timezone.now(),
        cash_balance=Decimal("10.00"),
        positions_value=Decimal("0.00"),
        total_value=Decimal("10.00"),
    )
    lean.save(snapshot)
    loaded = PortfolioSnapshot.objects.get(pk=snapshot.pk)
    loaded.total_value = Decimal("12.50")
    loaded.timestamp += timedelta(seconds=1)

    lean.save(loaded)

    assert PortfolioSnapshot.objects.count() == count + 1
    assert stored(loaded)["total_value"] == Decimal("12.50")
    assert stored(loaded)["timestamp"] == loaded.timestamp


def test_an_update_of_a_row_that_is_gone_raises(agent_factory):
    agent = agent_factory()
    position = Position.objects.create(agent=agent, symbol="MSFT")
    Position.objects.filter(pk=position.pk).delete()

    with pytest.raises(DatabaseError):
        lean.update(position, ["quantity"])


def test_select_loads_whole_rows_by_equality_and_by_membership(agent_factory):
    agent = agent_factory()
    for symbol in ("AAPL", "MSFT", "TSLA"):
        Position.objects.create(agent=agent, symbol=symbol, quantity=Decimal("1.25"))

    both = lean.select(Position, agent=agent.pk, symbol__in=["TSLA", "AAPL", "NOPE"])
    by_attname = lean.select(Position, agent_id=agent.pk, symbol="MSFT")

    assert sorted(p.symbol for p in both) == ["AAPL", "TSLA"]
    assert [stored(p) for p in both] == [
        stored(Position.objects.get(pk=p.pk)) for p in both
    ] and all(p.quantity == Decimal("1.25") for p in both)
    assert [p.symbol for p in by_attname] == ["MSFT"] and not by_attname[0]._state.adding
    assert lean.select(Position, agent=agent.pk, symbol__in=[]) == []
    assert lean.select(Position, agent=agent.pk, symbol="NOPE") == []
