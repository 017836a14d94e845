"""The serving processes' check of their PostgreSQL pool: connections the database dropped
while idle are replaced off the request path, so requests are handed working ones."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from runtime.jobs import database_pool_check, default_jobs


def test_each_serving_process_checks_its_own_pool_and_requests_do_not():
    jobs = {job.name: job for job in default_jobs()}
    assert not jobs["database-pool-check"].singleton
    if connection.vendor == "postgresql":
        # no round trip to check a connection as a request takes it
        assert connection.settings_dict["CONN_HEALTH_CHECKS"] is False


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_check_replaces_idle_connections_the_database_terminated():
    pool = connection.pool
    connection.close()  # back to the pool: every connection of the pool is idle
    held = [pool.getconn() for _ in range(2)]
    pids = [conn.info.backend_pid for conn in held]
    for conn in held:
        pool.putconn(conn)
    # given the database ended those connections while they sat in the pool
    admin = connection.get_connection_params()
    admin.pop("cursor_factory", None)
    with psycopg.connect(**admin, autocommit=True) as other:
        for pid in pids:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])
    # when the periodic check runs
    database_pool_check()
    # then the connections handed out next all work
    handed = [pool.getconn() for _ in range(2)]
    try:
        for conn in handed:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid not in pids
    finally:
        for conn in handed:
            pool.putconn(conn)
