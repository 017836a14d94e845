"""Seed the benchmark database: owners with API tokens and agents that auto-approve.

Run by ``bench/run.py`` as its own process against the benchmark database (the environment
carries ``DATABASE_URL`` and the gRPC addresses), after ``migrate`` and once the reference
services listen: creating an agent configures its ``trade_executions`` quota on the metering
service. Writes ``{"owners": [{"token", "agents": [ids]}]}`` as JSON to the path given.
"""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from agents.services import agent_create  # noqa: E402

# Every order of the benchmark must auto-approve and fit: the largest budget, approval
# thresholds no 1-share order reaches, no per-symbol position limit, a quota that the run
# cannot exhaust.
AGENT_CONFIG = {
    "auto_approval_limit": "1000000",
    "approval_budget_fraction": "1",
    "max_position_fraction": "1",
    "daily_trade_limit": 1_000_000,
}
BUDGET = Decimal("1000000")


def main(out: str, agents: int, owners: int) -> None:
    users = get_user_model()
    seeded = []
    for o in range(owners):
        user = users.objects.create_user(username=f"bench-owner-{o}", password=None)
        seeded.append({"token": Token.objects.create(user=user).key, "agents": []})
    for i in range(agents):
        owner = seeded[i % owners]
        user = users.objects.get(username=f"bench-owner-{i % owners}")
        agent = agent_create(
            owner=user, name=f"bench-agent-{i}", budget=BUDGET, config=dict(AGENT_CONFIG)
        )
        owner["agents"].append(str(agent.pk))
    Path(out).write_text(json.dumps({"owners": seeded}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
