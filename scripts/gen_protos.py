"""Regenerate the Python gRPC code under grpc_clients/_generated/ from protos/.

Usage:
    python scripts/gen_protos.py          # regenerate in place
    python scripts/gen_protos.py --check  # exit 1 if the committed output is stale

The .proto files under protos/ are the source of truth. protoc runs with `-I protos`, so the
generated modules are package-qualified (`creto.metering.v1.metering_pb2`); their imports are
then rewritten to `grpc_clients._generated.creto...` so they resolve inside this project's
package. Type stubs come from mypy-protobuf (`--mypy_out`, `--mypy_grpc_out`). The output is a
pure function of the .proto files and the pinned tool versions: rerunning leaves no diff.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
OUTPUT_DIR = ROOT / "grpc_clients" / "_generated"
PACKAGE_PREFIX = "grpc_clients._generated"
TOP_LEVEL_PROTO_PACKAGES = ("creto",)

PACKAGE_DOCSTRING = '"""Code generated from protos/ by scripts/gen_protos.py. Do not edit."""\n'


def _plugin(name: str) -> str:
    """Locate a protoc plugin next to the running interpreter first, then on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        sys.exit(f"gen_protos: {name} not found; install the dev dependency group")
    return found


def _proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def _rewrite_imports(path: Path) -> None:
    text = path.read_text()
    for package in TOP_LEVEL_PROTO_PACKAGES:
        text = re.sub(
            rf"^(\s*)from {package}\.",
            rf"\1from {PACKAGE_PREFIX}.{package}.",
            text,
            flags=re.MULTILINE,
        )
        if re.search(rf"^\s*import {package}\.", text, flags=re.MULTILINE):
            # A bare `import creto.x` would need every qualified use renamed too; protoc and
            # mypy-protobuf emit `from ... import` today, so fail loudly if that ever changes.
            sys.exit(f"gen_protos: unexpected `import {package}.` in {path.name}")
    path.write_text(text)


def generate(output_dir: Path) -> None:
    """Run protoc into an empty `output_dir` and post-process the result."""
    protos = _proto_files()
    if not protos:
        sys.exit(f"gen_protos: no .proto files under {PROTO_DIR}")
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    output_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={output_dir}",
        f"--grpc_python_out={output_dir}",
        f"--mypy_out={output_dir}",
        f"--mypy_grpc_out={output_dir}",
        *(str(p.relative_to(PROTO_DIR)) for p in protos),
    ]
    result = subprocess.run(command, cwd=PROTO_DIR, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"gen_protos: protoc failed:\n{result.stderr}")

    for path in sorted(output_dir.rglob("*")):
        if path.suffix in {".py", ".pyi"}:
            _rewrite_imports(path)
    for directory in [output_dir, *sorted(p for p in output_dir.rglob("*") if p.is_dir())]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text(PACKAGE_DOCSTRING if directory == output_dir else "")


def _relative_files(directory: Path) -> set[Path]:
    if not directory.exists():
        return set()
    return {
        p.relative_to(directory)
        for p in directory.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def stale_files(fresh: Path, committed: Path) -> list[str]:
    """Paths (relative to the output dir) that differ between `fresh` and `committed`."""
    fresh_files = _relative_files(fresh)
    committed_files = _relative_files(committed)
    stale = [
        str(p)
        for p in sorted(fresh_files | committed_files)
        if p not in fresh_files
        or p not in committed_files
        or not filecmp.cmp(fresh / p, committed / p, shallow=False)
    ]
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and fail if the committed output differs",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_generated"
        generate(fresh)
        stale = stale_files(fresh, OUTPUT_DIR)
        if args.check:
            if stale:
                print(
                    "gen_protos: generated code is stale; run `make protos` and commit:\n"
                    + "\n".join(f"  grpc_clients/_generated/{p}" for p in stale),
                    file=sys.stderr,
                )
                return 1
            print("gen_protos: grpc_clients/_generated is up to date")
            return 0
        if OUTPUT_DIR.exists():
            shutil.rmtree(OUTPUT_DIR)
        shutil.copytree(fresh, OUTPUT_DIR)
    print(f"gen_protos: wrote {len(_relative_files(OUTPUT_DIR))} files to grpc_clients/_generated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
