"""Settings for the test suite: the base settings with fast, isolated test doubles of nothing.

Databases, channel layers and gRPC services stay real: SQLite and the in-memory layer by
default, PostgreSQL and Redis when ``DATABASE_URL`` / ``REDIS_URL`` are set. The reference gRPC
services are started on ephemeral ports by ``tests/conftest.py``.
"""

import os

os.environ.setdefault("DJANGO_ENV", "test")

from config.settings import *  # noqa: F403
from config.settings import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMBEDDED_SERVICES = False
DEBUG = False
# Tests that exercise the limit switch it on explicitly with a small rate.
RATE_LIMIT_ENABLED = False
GRPC_TIMEOUT_SECONDS = 1.0
LOG_FORMAT = "text"

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": ""}  # in memory
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA foreign_keys=ON;"
else:
    DATABASES["default"]["CONN_MAX_AGE"] = 0
