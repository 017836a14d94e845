"""The account ledger: creation, configuration, pause/resume, the record of the kill switch,
snapshots. (Orders, and the kill switch that cancels them, are ``trades.services``.)

Balance-changing code locks the agent row first (``select_for_update``) and keeps the
invariant ``cash_balance + Σ position.cost_basis == budget + realized_pnl``.
"""

from __future__ import annotations

import logging
import math
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.choices import AgentStatus, Strategy
from agents.models import (
    CONFIG_KEYS,
    LIMIT_KEYS,
    Agent,
    AgentLimitChange,
    PortfolioSnapshot,
    agent_config_defaults,
)
from agents.money import cents
from agents.permissions import is_operator
from agents.representation import AgentSerializer
from agents.selectors import portfolio_valuation
from api import problems
from metering.services import (
    quota_configure,
    quota_configure_all,
    server_transaction_id,
    usage_record,
)
from observability.metrics import background_row_failed
from realtime.services import AgentEvents

logger = logging.getLogger("trading_demo.agents")

# Fields of the agent row a balance change writes (never event_seq: realtime owns it).
BALANCE_FIELDS = ["cash_balance", "reserved_cash", "realized_pnl", "last_active_at", "updated_at"]
# Fields of the agent row that count its orders of the day (``Agent.trades_on``).
DAILY_TRADE_FIELDS = ["trades_today", "trades_day"]


# --- configuration -----------------------------------------------------------------------------


def _decimal(value, *, minimum: Decimal, maximum: Decimal, inclusive_minimum: bool) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError("Must be a decimal number.")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("Must be a decimal number.") from None
    if not number.is_finite():
        raise ValueError("Must be a decimal number.")
    too_small = number < minimum if inclusive_minimum else number <= minimum
    if too_small or number > maximum:
        bound = "at least" if inclusive_minimum else "greater than"
        raise ValueError(f"Must be {bound} {minimum} and at most {maximum}.")
    return number


def agent_config_normalize(config: dict | None, *, base: dict | None = None) -> dict:
    """``config`` over ``base`` (default: ``agent_config_defaults()``), validated and normalised.

    Decimals are stored as strings, ``daily_trade_limit`` as an int, ``allowed_symbols`` as
    ``None`` (every market symbol) or a sorted list of upper-case market symbols. The optional
    ``strategy_params`` (the parameters of the agent's strategy, read by the programs that
    drive it, never by the server) is a small object of scalars and short lists, kept as given.
    Unknown keys or bad values raise ``problems.ValidationFailed`` with
    ``errors.config.<key>``.
    """
    if config is not None and not isinstance(config, dict):
        raise problems.ValidationFailed(
            "config must be an object.", errors={"config": ["Must be an object."]}
        )
    merged = {**agent_config_defaults(), **(base or {}), **(config or {})}
    errors: dict[str, list[str]] = {}
    normalised: dict = {}
    for key in sorted(set(merged) - set(CONFIG_KEYS) - {STRATEGY_PARAMS}):
        errors[key] = ["Unknown setting."]
    if STRATEGY_PARAMS in merged:
        try:
            normalised[STRATEGY_PARAMS] = _strategy_params(merged[STRATEGY_PARAMS])
        except ValueError as error:
            errors[STRATEGY_PARAMS] = [str(error)]
    checks = {
        "auto_approval_limit": lambda v: str(
            cents(_decimal(v, minimum=Decimal(0), maximum=Decimal(10**9), inclusive_minimum=True))
        ),
        "approval_budget_fraction": lambda v: str(
            _decimal(v, minimum=Decimal(0), maximum=Decimal(1), inclusive_minimum=False)
        ),
        "max_position_fraction": lambda v: str(
            _decimal(v, minimum=Decimal(0), maximum=Decimal(1), inclusive_minimum=False)
        ),
        "daily_trade_limit": _daily_trade_limit,
        "allowed_symbols": _allowed_symbols,
    }
    for key, check in checks.items():
        try:
            normalised[key] = check(merged[key])
        except ValueError as error:
            errors[key] = [str(error)]
    if errors:
        raise problems.ValidationFailed("Invalid agent config.", errors={"config": errors})
    return normalised


def agent_limits_authorize(*, actor, before: dict | None, after: dict) -> bool:
    """Refuse an owner's loosening of a governance limit beyond its operator-set ceiling.

    For each of ``LIMIT_KEYS`` (lower is stricter), a value above its ceiling
    (``settings.AGENT_LIMIT_CEILINGS``) that is also above what the agent had (``before``;
    ``None`` on creation) loosens governance beyond what the operator allows owners: only an
    operator (``agents.permissions.is_operator``) or the operator's own tools (``actor`` None:
    management commands) may. An owner gets ``problems.Forbidden`` (403), naming each limit
    and its ceiling. Lowering a limit is always allowed, so an owner can tighten an agent an
    operator loosened. Returns whether the change needed an operator's authority.
    """
    ceilings = settings.AGENT_LIMIT_CEILINGS
    beyond = {}
    for key in LIMIT_KEYS:
        value = Decimal(str(after[key]))
        if value <= ceilings[key]:
            continue
        if before is not None and value <= Decimal(str(before[key])):
            continue
        beyond[key] = ceilings[key]
    if not beyond:
        return False
    if actor is None or is_operator(actor):
        return True
    named = ", ".join(f"{key} above {ceiling}" for key, ceiling in beyond.items())
    raise problems.Forbidden(
        f"Loosening a governance limit beyond its operator-set ceiling ({named}) is an "
        "operator's action; an owner may set it at or below the ceiling.",
        ceilings={key: str(ceiling) for key, ceiling in beyond.items()},
    )


def _limit_changes_record(
    *, agent: Agent, actor, before: dict | None, after: dict, operator: bool
) -> None:
    """One audit row per config setting whose value changed (on creation: each that differs
    from its default), in the caller's transaction, so a change and its record commit or roll
    back together. ``operator``: the change needed an operator's authority."""
    reference = before if before is not None else agent_config_normalize(None)
    username = getattr(actor, "username", "") or ""
    rows = [
        AgentLimitChange(
            agent=agent,
            setting=key,
            before=before.get(key) if before is not None else None,
            after=after[key],
            actor=actor,
            actor_username=username,
            by_operator=operator,
        )
        for key in CONFIG_KEYS
        if reference.get(key) != after[key]
    ]
    if rows:
        AgentLimitChange.objects.bulk_create(rows)


STRATEGY_PARAMS = "strategy_params"
STRATEGY_PARAMS_MAX_KEYS = 32
STRATEGY_PARAMS_MAX_TEXT = 100


def _strategy_params(value) -> dict:
    """An object of at most 32 settings; each a number, short text, boolean, null or a list
    of at most 10 short texts. Bounded so a config stays small; the meaning is the
    strategy's."""
    if not isinstance(value, dict) or len(value) > STRATEGY_PARAMS_MAX_KEYS:
        raise ValueError(f"Must be an object of at most {STRATEGY_PARAMS_MAX_KEYS} settings.")

    def scalar(item) -> bool:
        if isinstance(item, str):
            return len(item) <= STRATEGY_PARAMS_MAX_TEXT
        return item is None or isinstance(item, bool | int | float)

    for key, item in value.items():
        if not 1 <= len(key) <= 64:
            raise ValueError("Setting names have 1 to 64 characters.")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{key}: must be a finite number.")
        if isinstance(item, list):
            if len(item) > 10 or not all(isinstance(v, str) and scalar(v) for v in item):
                raise ValueError(f"{key}: a list holds at most 10 short texts.")
        elif not scalar(item):
            raise ValueError(f"{key}: must be a number, a short text, a boolean or null.")
    return dict(value)


def _daily_trade_limit(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("Must be a whole number.")
    try:
        number = int(value)
    except ValueError:
        raise ValueError("Must be a whole number.") from None
    if not 1 <= number <= 1_000_000:
        raise ValueError("Must be between 1 and 1000000.")
    return number


def _allowed_symbols(value) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ValueError("Must be null (every symbol) or a non-empty list of symbols.")
    symbols = sorted({str(symbol).upper() for symbol in value})
    unknown = [symbol for symbol in symbols if symbol not in settings.MARKET_SYMBOLS]
    if unknown:
        raise ValueError(f"Unknown symbols: {', '.join(unknown)}.")
    return symbols


# --- lifecycle ---------------------------------------------------------------------------------


def agent_create(
    *,
    owner,
    name: str,
    budget: Decimal,
    strategy: str = Strategy.CUSTOM,
    risk_tolerance: int = 5,
    config: dict | None = None,
    actor=None,
) -> Agent:
    """Create an active agent whose cash is its whole budget.

    ``config`` is normalised over the defaults of SPEC §5. ``actor`` is who asks (the API
    passes the authenticated user; ``None`` is the operator's own tools, e.g. management
    commands): an owner's limit above its ceiling is refused (``agent_limits_authorize``, 403),
    and each limit set other than its default is audited (``AgentLimitChange``). After
    commit, the agent's ``trade_executions`` quota is configured on the metering service
    (``daily_trade_limit`` per day). An initial portfolio snapshot starts its history.
    Invalid input raises ``ValidationError``/``problems.ValidationFailed`` and creates nothing.
    """
    normalised = agent_config_normalize(config)
    operator = agent_limits_authorize(actor=actor, before=None, after=normalised)
    agent = Agent(
        owner=owner,
        name=name,
        budget=budget,
        cash_balance=budget,
        strategy=strategy,
        risk_tolerance=risk_tolerance,
        config=normalised,
    )
    agent.full_clean()
    with transaction.atomic():
        agent.save(force_insert=True)
        PortfolioSnapshot.objects.create(
            agent=agent,
            timestamp=agent.created_at,
            cash_balance=agent.cash_balance,
            positions_value=Decimal("0"),
            total_value=agent.cash_balance,
        )
        _limit_changes_record(
            agent=agent, actor=actor, before=None, after=normalised, operator=operator
        )
        transaction.on_commit(lambda: quota_configure(agent=agent))
    return agent


def agent_update(
    *,
    agent: Agent,
    actor,
    name: str | None = None,
    status: str | None = None,
    config: dict | None = None,
) -> Agent:
    """Rename, reconfigure (partial config merged over the current one) or pause/resume.

    ``status`` may only move between ``active`` and ``paused`` (400 otherwise); a terminated
    or suspended agent cannot be changed (409). A limit raised above its operator-set ceiling
    needs an operator as ``actor`` (``agent_limits_authorize``: 403 for an owner); every
    changed config setting is audited (``AgentLimitChange``: who, when, before, after) in the
    same transaction. A changed ``daily_trade_limit`` is sent to the metering service after
    commit, as an optional hint (``metering.services.quota_configure``).
    """
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.status == AgentStatus.TERMINATED:
            raise problems.Conflict("A terminated agent cannot be changed.")
        fields = ["updated_at"]
        if status is not None and status != agent.status:
            if status not in (AgentStatus.ACTIVE, AgentStatus.PAUSED):
                raise problems.ValidationFailed(
                    "status may only be set to active or paused.",
                    errors={
                        "status": [
                            "Only 'active' and 'paused' can be set; DELETE terminates an agent."
                        ]
                    },
                )
            if agent.status not in (AgentStatus.ACTIVE, AgentStatus.PAUSED):
                raise problems.Conflict(f"A {agent.status} agent cannot be resumed or paused.")
            agent.status = status
            fields.append("status")
        if name is not None:
            agent.name = name
            fields.append("name")
        limit_changed = False
        if config is not None:
            before = agent_config_normalize(None, base=agent.config)
            after = agent_config_normalize(config, base=agent.config)
            operator = agent_limits_authorize(actor=actor, before=before, after=after)
            _limit_changes_record(
                agent=agent, actor=actor, before=before, after=after, operator=operator
            )
            agent.config = after
            limit_changed = after["daily_trade_limit"] != before["daily_trade_limit"]
            fields.append("config")
        # The owner cannot change here: skip its existence query.
        agent.full_clean(exclude=["owner"])
        agent.save(update_fields=fields)
        if limit_changed:
            transaction.on_commit(lambda: quota_configure(agent=agent))
    return agent


def agent_quota_hints_resend() -> int:
    """Send the ``daily_trade_limit`` hint of every agent not terminated to the metering
    service again (``metering.services.quota_configure_all``); returns how many were sent.

    The reference metering service keeps these hints in memory: one this server has just
    started (``runtime.embedded.start_embedded_services``) knows none of them, and would
    apply its default ``trade_executions`` quota to agents whose limit is above it. Paused
    and suspended agents are included: they may trade again without a limit change.
    """
    agents = Agent.objects.exclude(status=AgentStatus.TERMINATED).only("id", "config")
    return quota_configure_all(agents=agents)


def agent_terminated_record(*, agent: Agent, actor, events: AgentEvents) -> None:
    """Record the end of ``agent``, a row the caller locked after ending its orders (the
    kill switch, ``trades.services.agent_terminate``): status ``terminated``, an
    ``agent_terminations`` usage event, and ``agent.terminated`` published through ``events``,
    in the caller's transaction. ``agent.owner`` should be loaded (the Agent JSON names it)."""
    agent.status = AgentStatus.TERMINATED
    agent.terminated_at = timezone.now()
    agent.save(update_fields=["status", "terminated_at", "updated_at"])
    usage_record(
        agent=agent,
        code="agent_terminations",
        quantity=1,
        properties={"actor": getattr(actor, "username", "") or ""},
        transaction_id=server_transaction_id("agent_terminated", agent.pk),
    )
    events.publish(event="agent.terminated", channel="portfolio", data=AgentSerializer(agent).data)


# --- snapshots ---------------------------------------------------------------------------------


def portfolio_snapshots_record(*, agents: list[Agent], prices: dict[str, Decimal], now) -> int:
    """Store one portfolio snapshot at ``now`` for each of ``agents`` (with their open
    positions loaded, as ``agents.selectors.snapshot_due_agents`` gives them), valued at
    ``prices`` (covering their symbols), in one INSERT. Returns how many.

    An agent whose valuation fails or cannot be stored is logged and counted
    (``background_row_failed``); the others are snapshotted.
    """
    snapshots = []
    for agent in agents:
        try:
            valuation = portfolio_valuation(
                agent=agent, positions=list(agent.positions.all()), prices=prices
            )
            snapshot = PortfolioSnapshot(
                agent=agent,
                timestamp=now,
                cash_balance=valuation["cash_balance"],
                positions_value=valuation["positions_value"],
                total_value=valuation["total_value"],
            )
            # An amount too large for its column fails here, not the whole batch's INSERT.
            snapshot.full_clean(
                exclude=["agent"], validate_unique=False, validate_constraints=False
            )
        except Exception:
            background_row_failed("snapshots", agent.pk)
            continue
        snapshots.append(snapshot)
    PortfolioSnapshot.objects.bulk_create(snapshots)
    return len(snapshots)
