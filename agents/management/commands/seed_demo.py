"""``manage.py seed_demo``: demo users, tokens, agents, filled trades and one pending approval.

Everything goes through the domain services (``agents.services.agent_create``,
``trades.services.trade_submit``), so balances, positions, usage events, live events and the
oversight service's request all agree. Idempotent: users are found by username, agents by
owner and name, orders by their ``client_order_id``; what exists is left untouched, so a
second run changes nothing and prints the same tokens.
"""

from __future__ import annotations

import math
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents.demo import DEMO_AGENTS, DEMO_USERS, DemoAgent, DemoTrade


class Command(BaseCommand):
    help = (
        "Create the demo data set: an operator 'operator' (password operator-demo-pass) and "
        "two owners 'alice' and 'bob' (alice-demo-pass, bob-demo-pass) with API tokens, four "
        "agents with different strategies, a few filled trades and one order waiting for an "
        "operator's approval. Idempotent: existing rows are left as they are. Needs the "
        "metering and oversight gRPC services (METERING_GRPC_ADDRESS, OVERSIGHT_GRPC_ADDRESS)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="do nothing when any user exists (what `make run` uses on every start)",
        )
        parser.add_argument(
            "--no-logins",
            action="store_true",
            help="do not print the logins (the server's banner prints them once)",
        )

    def handle(self, *args, if_empty: bool, no_logins: bool = False, **options):
        user_model = get_user_model()
        if if_empty and user_model.objects.exists():
            self.stdout.write("Users exist already; not seeding the demo (--if-empty).")
            return
        self._require_services()

        users = {demo.username: self._user(demo) for demo in DEMO_USERS}
        created_orders = 0
        for demo_agent in DEMO_AGENTS:
            agent = self._agent(demo_agent, owner=users[demo_agent.owner])
            for demo_trade in demo_agent.trades:
                created_orders += self._trade(agent, demo_trade, user=users[demo_agent.owner])

        from agents.demo import demo_logins

        self.stdout.write(
            self.style.SUCCESS("Demo data ready.") + f" New orders: {created_orders}."
        )
        if no_logins:
            return
        self.stdout.write("Logins (username / password, API token):")
        for line in demo_logins():
            self.stdout.write(f"  {line}")

    def _require_services(self) -> None:
        from grpc_clients.health import (
            METERING_SERVICE_NAME,
            OVERSIGHT_SERVICE_NAME,
            check_health,
        )

        down = [
            f"{name} ({address})"
            for name, address, service in (
                ("metering", settings.METERING_GRPC_ADDRESS, METERING_SERVICE_NAME),
                ("oversight", settings.OVERSIGHT_GRPC_ADDRESS, OVERSIGHT_SERVICE_NAME),
            )
            if not check_health(address, service, timeout=max(settings.GRPC_TIMEOUT_SECONDS, 1.0))
        ]
        if down:
            raise CommandError(
                "The demo's orders need the gRPC services, and these do not answer: "
                + ", ".join(down)
                + ". Start them (`manage.py run_reference_services`), or let the server seed "
                "with its embedded services: `manage.py serve --seed-demo-if-empty`."
            )

    def _user(self, demo):
        from rest_framework.authtoken.models import Token

        user_model = get_user_model()
        with transaction.atomic():
            user, created = user_model.objects.get_or_create(
                username=demo.username,
                defaults={"is_staff": demo.operator, "email": f"{demo.username}@example.com"},
            )
            if created:
                user.set_password(demo.password)
                user.save(update_fields=["password"])
                if demo.operator:
                    group, _ = Group.objects.get_or_create(name=settings.OPERATORS_GROUP)
                    user.groups.add(group)
                self.stdout.write(f"Created user {demo.username}.")
            Token.objects.get_or_create(user=user)
        return user

    def _agent(self, demo: DemoAgent, *, owner):
        from agents.models import Agent
        from agents.services import agent_create

        agent = Agent.objects.filter(owner=owner, name=demo.name).order_by("created_at").first()
        if agent is not None:
            return agent
        agent = agent_create(
            owner=owner,
            name=demo.name,
            budget=demo.budget,
            strategy=demo.strategy,
            risk_tolerance=demo.risk_tolerance,
            config=demo.config,
        )
        self.stdout.write(f"Created agent {demo.name} ({demo.strategy}, budget {demo.budget}).")
        return agent

    def _trade(self, agent, demo: DemoTrade, *, user) -> int:
        from api.problems import Problem
        from grpc_clients.errors import GrpcClientError
        from trades.market import current_price
        from trades.models import Trade
        from trades.services import trade_submit

        if Trade.objects.filter(agent=agent, client_order_id=demo.client_order_id).exists():
            return 0
        symbol = settings.MARKET_SYMBOLS[demo.symbol_index % len(settings.MARKET_SYMBOLS)]
        price = current_price(symbol)
        quantity = max(1, math.ceil(demo.target_notional / price))
        data = {
            "symbol": symbol,
            "side": demo.side,
            "type": "market",
            "quantity": str(Decimal(quantity)),
            "client_order_id": demo.client_order_id,
            "metadata": {"strategy": agent.strategy, "rationale": "demo seed"},
        }
        try:
            outcome = trade_submit(agent_id=agent.pk, user=user, data=data)
        except (Problem, GrpcClientError) as exc:
            raise CommandError(
                f"Could not place the demo order {demo.client_order_id} for {agent.name}: {exc}"
            ) from exc
        if outcome.status_code >= 400:
            raise CommandError(
                f"The demo order {demo.client_order_id} for {agent.name} was refused "
                f"({outcome.status_code}): {outcome.body}"
            )
        status = outcome.body.get("status") if isinstance(outcome.body, dict) else "?"
        self.stdout.write(
            f"  {agent.name}: {demo.side} {quantity} {symbol} → {status} ({outcome.status_code})"
        )
        return 1
