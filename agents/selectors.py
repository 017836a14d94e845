"""Reads of agents and portfolios, scoped to what the user may see."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from django.db.models import Exists, F, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.utils import timezone

from agents.choices import AgentStatus
from agents.models import Agent, PortfolioSnapshot, Position
from agents.money import ZERO, cents
from agents.permissions import is_operator
from api import problems

# The portfolio history has at most one point a minute per agent.
SNAPSHOT_MIN_INTERVAL = timedelta(minutes=1)


def agent_queryset_for(user) -> QuerySet[Agent]:
    """The agents ``user`` may see: their own, or every agent for an operator."""
    queryset = Agent.objects.select_related("owner")
    if is_operator(user):
        return queryset
    return queryset.filter(owner_id=user.pk)


def agent_get_for(
    *, user, agent_id: UUID | str, lock: bool = False, queryset: QuerySet[Agent] | None = None
) -> Agent:
    """The agent ``agent_id`` if ``user`` may see it; otherwise ``problems.NotFound``.

    With ``lock=True`` the row is taken with ``SELECT … FOR UPDATE`` (call inside
    ``transaction.atomic``): the first lock of every balance-changing operation. Another
    owner's agent answers exactly like a missing one, so its existence is not disclosed.
    ``queryset`` (all agents by default) is what the agent is read from, e.g. agents annotated
    with more to read in the same statement.
    """
    agents = Agent.objects.all() if queryset is None else queryset
    if lock:
        agents = agents.select_for_update()
    try:
        agent = agents.get(pk=_agent_pk(agent_id))
    except Agent.DoesNotExist:
        raise problems.NotFound("No such agent.") from None
    if agent.owner_id != user.pk and not is_operator(user):
        raise problems.NotFound("No such agent.")
    if agent.owner_id == user.pk:
        agent.owner = user  # the owner is the user at hand: agent.owner costs no query
    return agent


def agent_id_for(*, user, agent_id: UUID | str) -> UUID:
    """The id of the agent ``agent_id`` if ``user`` may see it; otherwise ``problems.NotFound``,
    exactly as ``agent_get_for`` answers.

    For the reads of an agent's rows (its orders), which need no more than its id: only the
    owner's id is read, and no ``Agent`` is built.
    """
    pk = _agent_pk(agent_id)
    agent_owner_id_for(user=user, agent_id=pk)
    return pk


def agent_owner_id_for(*, user, agent_id: UUID | str):
    """The id of the owner of the agent ``agent_id`` if ``user`` may see the agent (``user``'s
    own id, or another owner's for an operator); otherwise ``problems.NotFound``, exactly as
    ``agent_get_for`` answers. One query (two for an operator not on staff, whose group is
    read), and no ``Agent`` is built."""
    try:
        owner_id = Agent.objects.values_list("owner_id", flat=True).get(pk=_agent_pk(agent_id))
    except Agent.DoesNotExist:
        raise problems.NotFound("No such agent.") from None
    if owner_id != user.pk and not is_operator(user):
        raise problems.NotFound("No such agent.")
    return owner_id


def _agent_pk(agent_id: UUID | str) -> UUID:
    try:
        return UUID(str(agent_id))
    except ValueError:
        raise problems.NotFound("No such agent.") from None


def portfolio_valuation(
    *, agent: Agent, positions: list[Position], prices: dict[str, Decimal]
) -> dict:
    """The SPEC portfolio document for ``agent`` valued at ``prices`` (symbol → price).

    Positions with no shares left are omitted. Money is rounded to cents. The ledger does not
    read the market: the order workflow passes the prices in (``trades.selectors.portfolio_for``
    values a portfolio at current market prices).
    """
    rows = []
    positions_value = ZERO
    unrealized = ZERO
    for position in positions:
        if position.quantity <= 0:
            continue
        price = prices[position.symbol]
        market_value = cents(position.quantity * price)
        pnl = market_value - position.cost_basis
        positions_value += market_value
        unrealized += pnl
        rows.append(
            {
                "symbol": position.symbol,
                "quantity": position.quantity,
                "reserved_quantity": position.reserved_quantity,
                "avg_price": position.avg_price,
                "cost_basis": position.cost_basis,
                "current_price": cents(price),
                "market_value": market_value,
                "unrealized_pnl": pnl,
            }
        )
    return {
        "agent_id": agent.pk,
        "cash_balance": agent.cash_balance,
        "reserved_cash": agent.reserved_cash,
        "available_cash": agent.available_cash,
        "positions_value": positions_value,
        "total_value": agent.cash_balance + positions_value,
        "realized_pnl": agent.realized_pnl,
        "unrealized_pnl": unrealized,
        "positions": rows,
        "updated_at": timezone.now(),
    }


def snapshot_due_agents(*, now, min_interval: timedelta = SNAPSHOT_MIN_INTERVAL) -> list[Agent]:
    """The live agents whose portfolio history needs a point at ``now``: the last snapshot
    is older than ``min_interval`` (or there is none), and they hold shares (their value
    moves with the market) or were active since (their cash changed). Each comes with its
    open positions (``agent.positions.all()``, no further query)."""
    last_snapshot = PortfolioSnapshot.objects.filter(agent=OuterRef("pk")).order_by("-timestamp")
    holding = Position.objects.filter(agent=OuterRef("pk"), quantity__gt=0)
    return list(
        Agent.objects.exclude(status=AgentStatus.TERMINATED)
        .annotate(last_snapshot=Subquery(last_snapshot.values("timestamp")[:1]))
        .filter(Q(last_snapshot__isnull=True) | Q(last_snapshot__lte=now - min_interval))
        .filter(Exists(holding) | Q(last_active_at__gt=F("last_snapshot")))
        .prefetch_related(Prefetch("positions", queryset=Position.objects.filter(quantity__gt=0)))
    )


def portfolio_history(agent: Agent, days: int = 30) -> list[dict]:
    """Snapshots of the agent's valuation over the last ``days`` days, oldest first."""
    since = timezone.now() - timedelta(days=days)
    return list(
        PortfolioSnapshot.objects.filter(agent=agent, timestamp__gte=since)
        .order_by("timestamp")
        .values("timestamp", "total_value", "cash_balance")
    )
