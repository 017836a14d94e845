"""Boundaries of the gRPC packages: generated code current, no Django where none belongs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_generated_code_is_current():
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_reference_services_and_generated_code_import_no_django():
    probe = (
        "import sys, reference_services.server, reference_services.__main__, grpc_clients.errors;"
        "import grpc_clients._generated.creto.metering.v1.metering_pb2_grpc;"
        "import grpc_clients._generated.creto.oversight.v1.oversight_pb2_grpc;"
        "roots = {m.split('.')[0] for m in sys.modules};"
        "loaded = sorted(roots & {'django', 'rest_framework'});"
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
