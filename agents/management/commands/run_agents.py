"""``manage.py run_agents``: make agents trade by their strategy, through the public API.

A client like any other: it talks to the server at ``--url`` (this one by default, or any
other) with the owners' API tokens, over REST and the WebSocket only (``agent_runner``), and
reads nothing from this process's database, except with ``--demo-tokens``, which looks up the
tokens of the seeded demo owners here. It stops on Ctrl-C/SIGTERM or after ``--duration``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agent_runner.client import DEFAULT_BURST, DEFAULT_RATE


class Command(BaseCommand):
    help = (
        "Drive agents by their strategy (momentum, mean_reversion, market_making, arbitrage) "
        "through the REST API and WebSocket of a server, with their owners' tokens, as an "
        "external program would. Logs every decision with its reason and a progress line."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--url",
            default=os.environ.get("RUN_AGENTS_URL") or f"http://127.0.0.1:{settings.PORT}",
            help="the server (env RUN_AGENTS_URL; default this server, http://127.0.0.1:PORT)",
        )
        parser.add_argument(
            "--token",
            action="append",
            default=[],
            help="an owner's API token; repeat for several owners (env RUN_AGENTS_TOKENS, "
            "comma-separated). Every agent of these owners with a built-in strategy trades",
        )
        parser.add_argument(
            "--demo-tokens",
            action="store_true",
            help="use the tokens of the demo owners that `seed_demo` created in this "
            "server's database (what `make run` does)",
        )
        parser.add_argument(
            "--agent",
            action="append",
            default=[],
            dest="agents",
            help="drive only this agent (name or id); repeatable. Default: all of them",
        )
        parser.add_argument(
            "--duration",
            type=float,
            default=0,
            help="stop after this many seconds (default: run until Ctrl-C)",
        )
        parser.add_argument(
            "--rate",
            default=os.environ.get("RUN_AGENTS_RATE", DEFAULT_RATE),
            help="requests the runner may make, count/period (env RUN_AGENTS_RATE, default "
            f"{DEFAULT_RATE}: with the burst, under the server's default RATE_LIMIT 100/15m)",
        )
        parser.add_argument(
            "--burst",
            type=int,
            default=int(os.environ.get("RUN_AGENTS_BURST", DEFAULT_BURST)),
            help=f"requests that may go at once (env RUN_AGENTS_BURST, default {DEFAULT_BURST})",
        )
        parser.add_argument(
            "--pace",
            type=float,
            default=float(os.environ.get("RUN_AGENTS_PACE", 15)),
            help="seconds an agent waits after acting before it acts again (env "
            "RUN_AGENTS_PACE, default 15)",
        )
        parser.add_argument(
            "--progress",
            type=float,
            default=60,
            help="seconds between progress lines (default 60)",
        )
        parser.add_argument(
            "--json-summary",
            action="store_true",
            help="end with one line 'summary {json}': the server's answers and each agent's counts",
        )

    def handle(self, *args, **options):
        import httpx2

        from agent_runner.client import ApiError, RequestBudget, parse_rate
        from agent_runner.runner import Runner

        tokens = [t for t in options["token"] if t]
        tokens += [t.strip() for t in os.environ.get("RUN_AGENTS_TOKENS", "").split(",") if t]
        if options["demo_tokens"]:
            tokens += _demo_tokens()
        tokens = list(dict.fromkeys(tokens))
        if not tokens:
            raise CommandError(
                "No token: pass --token KEY (one per owner), set RUN_AGENTS_TOKENS, or use "
                "--demo-tokens for the seeded demo owners of this server."
            )
        try:
            count, period = parse_rate(options["rate"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        if options["burst"] < 1:
            raise CommandError("--burst must be at least 1")
        _configure_logging(options["verbosity"])

        runner = Runner(
            base_url=options["url"],
            tokens=tokens,
            budget=RequestBudget(count, period, options["burst"]),
            only=set(options["agents"]) or None,
            pace_seconds=options["pace"],
            progress_seconds=options["progress"],
            progress=lambda line: self.stdout.write(line),
        )
        self.stdout.write(
            f"run_agents: {options['url']} with {len(tokens)} owner token(s), "
            f"at most {options['rate']} requests (burst {options['burst']}). Ctrl-C stops."
        )
        try:
            asyncio.run(self._run(runner, options["duration"] or None))
        except ApiError as error:
            raise CommandError(f"{options['url']}: {error}") from None
        except httpx2.TransportError as error:
            raise CommandError(f"{options['url']} cannot be reached: {error}") from None
        self.stdout.write(runner.progress_line().replace("run_agents", "run_agents done", 1))
        if options["json_summary"]:
            self.stdout.write("summary " + json.dumps(runner.summary()))

    async def _run(self, runner, duration):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop.set)
        try:
            await runner.run(duration)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def _demo_tokens() -> list[str]:
    from rest_framework.authtoken.models import Token

    from agents.demo import DEMO_USERS

    owners = [demo.username for demo in DEMO_USERS if not demo.operator]
    return list(
        Token.objects.filter(user__username__in=owners)
        .order_by("user__username")
        .values_list("key", flat=True)
    )


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.getLogger("trading_demo.runner").setLevel(level)
    # One line per HTTP request or WebSocket frame is noise next to the decisions.
    for name in ("httpx2", "httpcore2", "httpx", "httpcore", "websockets"):
        logging.getLogger(name).setLevel(logging.WARNING)
