"""SQL queries and synchronous gRPC calls per auto-approved market order, measured in process.

Run by ``bench/run.py`` against the benchmark database while the reference services listen.
It places orders through Django's test ``Client`` (the whole request: middleware, token
authentication, the view, the service, the ``api_calls`` usage row), counting the SQL with
``CaptureQueriesContext`` and the gRPC calls with the client's metrics hook counter
(``trading_grpc_calls_total``), which every call of the wrappers increments. Prints JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from observability.metrics import grpc_call_counts  # noqa: E402

ORDERS = 5
# Transaction control is counted apart: the order's one transaction costs a BEGIN and a COMMIT.
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK")


def main(seed_path: str) -> None:
    seed = json.loads(Path(seed_path).read_text())
    owner = seed["owners"][0]
    agent = owner["agents"][0]
    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Token {owner['token']}")
    path = f"/api/v1/agents/{agent}/trades"
    body = {"symbol": "AAPL", "side": "buy", "type": "market", "quantity": "1"}
    # Warm up: first-use work (market price rows, content types, connections) is not per order.
    assert client.post(path, body, content_type="application/json").status_code == 201
    samples = []
    for _ in range(ORDERS):
        before = grpc_call_counts()
        with CaptureQueriesContext(connection) as queries:
            response = client.post(path, body, content_type="application/json")
        after = grpc_call_counts()
        assert response.status_code == 201, response.content
        assert response.json()["status"] == "filled", response.json()
        calls = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
        control = [
            q for q in queries.captured_queries if q["sql"].upper().startswith(TRANSACTION_CONTROL)
        ]
        samples.append(
            {
                "queries": len(queries) - len(control),
                "transaction_control": len(control),
                "sql": [q["sql"][:160] for q in queries.captured_queries],
                "grpc_calls": sum(calls.values()),
                "grpc_methods": calls,
            }
        )
    last = samples[-1]
    print(
        json.dumps(
            {
                "orders": ORDERS,
                "queries_per_order": max(s["queries"] for s in samples),
                "transaction_control_per_order": max(s["transaction_control"] for s in samples),
                "grpc_calls_per_order": max(s["grpc_calls"] for s in samples),
                "grpc_methods": last["grpc_methods"],
                "sql_of_one_order": last["sql"],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
