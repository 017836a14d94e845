"""``manage.py seed_agents --count N --owner USERNAME``: many agents for load and UI tests.

Each agent is created by ``agents.services.agent_create`` (the same validation, initial
snapshot and quota configuration as ``POST /api/v1/agents``), with a progress bar; batches of
100 share one transaction (one commit each). Names continue after the owner's existing
``<prefix>-NNNNN`` agents, so running it twice gives 2 x N distinct agents.
"""

from __future__ import annotations

import itertools
from decimal import Decimal, InvalidOperation

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.template.defaultfilters import pluralize
from tqdm import tqdm

from agents.choices import Strategy
from api.problems import Problem

MAX_COUNT = 100_000
BATCH_SIZE = 100


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise CommandError(f"--count must be a whole number, got {value!r}") from None
    if not 1 <= count <= MAX_COUNT:
        raise CommandError(f"--count must be between 1 and {MAX_COUNT}, got {count}")
    return count


class _Stream:
    """A command's output (``OutputWrapper``) as the file tqdm writes its bar to: written as
    given, without the newline ``OutputWrapper.write`` appends by default."""

    def __init__(self, output):
        self.output = output

    def write(self, text: str) -> None:
        self.output.write(text, ending="")

    def flush(self) -> None:
        self.output.flush()


class Command(BaseCommand):
    help = (
        "Create COUNT agents for an existing user through agents.services.agent_create, "
        "with a progress bar. Strategies rotate through every strategy unless --strategy "
        "is given."
    )

    def add_arguments(self, parser):
        parser.add_argument("--count", required=True, help="how many agents (1-100000)")
        parser.add_argument("--owner", required=True, help="username of the agents' owner")
        parser.add_argument(
            "--budget", default="10000", help="budget of each agent (1,000-1,000,000; 10000)"
        )
        parser.add_argument(
            "--strategy",
            choices=Strategy.values,
            help="one strategy for all (default: rotate through all)",
        )
        parser.add_argument("--prefix", default="agent", help="name prefix (default 'agent')")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    def handle(self, *args, count: str, owner: str, budget: str, strategy, prefix, **options):
        from agents.models import Agent
        from agents.services import agent_create

        total = _count(count)
        try:
            owner_user = get_user_model().objects.get(username=owner)
        except get_user_model().DoesNotExist:
            raise CommandError(
                f"No user named {owner!r}. Create one first (`manage.py createsuperuser`, "
                "or `manage.py seed_demo` for alice and bob)."
            ) from None
        try:
            amount = Decimal(budget)
        except InvalidOperation:
            raise CommandError(f"--budget must be a number, got {budget!r}") from None
        if not Decimal("1000") <= amount <= Decimal("1000000"):
            raise CommandError(f"--budget must be between 1000 and 1000000, got {budget}")
        prefix = prefix.strip()
        if not prefix or len(prefix) > 80:
            raise CommandError("--prefix must be 1-80 characters")

        start = Agent.objects.filter(owner=owner_user, name__startswith=f"{prefix}-").count() + 1
        strategies = itertools.cycle([strategy] if strategy else Strategy.values)
        # The bar advances when a batch has committed, so its rate is agents created per second.
        progress = tqdm(
            total=total,
            desc=f"agents for {owner}",
            unit="agent",
            file=_Stream(self.stderr),
            disable=options["no_progress"],
        )
        created = 0
        numbers = iter(range(start, start + total))
        while batch := list(itertools.islice(numbers, BATCH_SIZE)):
            # One transaction per batch: agent_create's own atomic block becomes a savepoint,
            # so the rules are the same and commits (and their on-commit quota configuration)
            # happen once per batch instead of once per agent.
            try:
                with transaction.atomic():
                    for number in batch:
                        agent_create(
                            owner=owner_user,
                            name=f"{prefix}-{number:05d}",
                            budget=amount,
                            strategy=next(strategies),
                        )
            except (ValidationError, Problem) as exc:
                detail = "; ".join(exc.messages) if isinstance(exc, ValidationError) else exc
                raise CommandError(
                    f"Agent {prefix}-{number:05d} was refused ({detail}); {created} agents were "
                    "created before its batch, which was rolled back."
                ) from exc
            created += len(batch)
            progress.update(len(batch))
        progress.close()
        self.stdout.write(
            self.style.SUCCESS(f"Created {created} agent{pluralize(created)} for {owner}")
            + f" ({prefix}-{start:05d} … {prefix}-{start + total - 1:05d})."
        )
