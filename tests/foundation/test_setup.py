"""The setup contract: which Python `make` picks, and production's required configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
FIND_PYTHON = BASE_DIR / "scripts" / "find-python.sh"


def test_find_python_picks_a_python_312_or_newer():
    result = subprocess.run(["sh", str(FIND_PYTHON)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    version = subprocess.run(
        [result.stdout.strip(), "-c", "import sys; print(sys.version_info[:2] >= (3, 12))"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert version.stdout.strip() == "True"


def test_find_python_without_a_suitable_python_says_what_to_install(tmp_path):
    # given: a PATH whose only python3 is too old, and no pyenv/uv installs (the script needs
    # nothing but the shell's builtins, so the machine's own Pythons stay out of its sight)
    old = tmp_path / "python3"
    old.write_text("#!/bin/sh\nexit 1\n")  # answers "too old" to the version probe
    old.chmod(0o755)
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path)}
    # when
    result = subprocess.run(
        ["/bin/sh", str(FIND_PYTHON)], capture_output=True, text=True, env=env, timeout=30
    )
    # then
    assert result.stdout == ""
    assert result.returncode == 1
    assert "Python 3.12 or newer is required" in result.stderr
    assert "PYTHON=" in result.stderr


def _manage(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "ALLOWED_HOSTS"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", **env_overrides})
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_production_without_secret_key_refuses_to_start():
    result = _manage({"DJANGO_ENV": "production", "ALLOWED_HOSTS": "example.com"}, "check")
    assert result.returncode == 2
    assert "Configuration error: SECRET_KEY is required when DJANGO_ENV=production" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_production_without_allowed_hosts_refuses_to_start():
    result = _manage({"DJANGO_ENV": "production", "SECRET_KEY": "x" * 64}, "check")
    assert result.returncode == 2
    assert "ALLOWED_HOSTS is required" in result.stderr


def _channel_prefix(redis_url: str) -> str:
    result = _manage(
        {"REDIS_URL": redis_url},
        "shell",
        "-c",
        "from django.conf import settings; "
        "print(settings.CHANNEL_LAYERS['default']['CONFIG']['prefix'])",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_deployments_on_two_databases_of_one_redis_publish_apart():
    # Redis pub/sub ignores the database number: the channel prefix must not.
    first = _channel_prefix("redis://127.0.0.1:6379/1")
    second = _channel_prefix("redis://127.0.0.1:6379/2")
    assert first != second
    assert _channel_prefix("redis://127.0.0.1:6379/1") == first
