"""Shared fixtures. Integration tests use the real local Redis and Postgres.

Each test run gets its own Postgres database and its own Redis key prefix, and removes
both afterwards, so runs never see each other's data.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis as redis_lib
from fixtures_emulator import *  # noqa: F403  (emulator fixtures)
from fixtures_provider import *  # noqa: F403  (the built wheel and a virtualenv holding it)

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")

os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")


def github_schema_real():
    """GitHub's published GraphQL schema (shared/github/schema.graphql beside the clone).

    A missing file fails the tests that need it: skipping would hide the check that every
    query the client sends is valid on GitHub.
    """
    from functools import cache
    from pathlib import Path

    @cache
    def load():
        import graphql

        root = Path(__file__).resolve().parents[1]
        path = Path(
            os.environ.get("GITHUB_SCHEMA_PATH", root.parent / "shared" / "github" / "schema.graphql")
        )
        if not path.exists():
            pytest.fail(
                f"GitHub's schema not found at {path}: put shared/ beside the clone or set GITHUB_SCHEMA_PATH"
            )
        # GitHub's SDL does not pass graphql-core's own checks (shared/NOTES.md)
        return graphql.build_schema(
            path.read_text(encoding="utf-8"), assume_valid_sdl=True, assume_valid=True
        )

    return load()


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture()
def redis_client(redis_url: str):
    client = redis_lib.Redis.from_url(redis_url)
    try:
        client.ping()
    except redis_lib.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"Redis at {redis_url} is not reachable: {exc}")
    yield client
    client.close()


@pytest.fixture()
def key_prefix(redis_client, run_id: str):
    """A Redis key prefix unique to this test; every key under it is deleted afterwards."""
    prefix = f"test:{run_id}:{uuid.uuid4().hex[:8]}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="session")
def pg_database(run_id: str):
    """A fresh Postgres database for this test session, dropped at the end."""
    import psycopg

    name = f"ghc_test_{run_id}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is generated here, not user input
    yield name
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def pg_dsn(pg_database: str) -> str:
    return f"host=127.0.0.1 port=5432 user=postgres dbname={pg_database}"


@pytest.fixture()
def fresh_db(pg_dsn: str, pg_database: str, request):
    """(name, dsn) of an empty database for one test, dropped afterwards."""
    import psycopg

    name = f"{pg_database}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # generated name, not user input
    yield name, f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


FIGURES: list[str] = []


@pytest.fixture()
def figure(request):
    """figure("crash", kills=20, lost=0): a one-line result, repeated in the run's summary."""

    def emit(name: str, **values: object) -> str:
        line = f"FIGURE {name}: " + ", ".join(f"{k}={v}" for k, v in values.items())
        print(line)
        FIGURES.append(line)
        return line

    return emit


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("fault figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture()
def product_log():
    """What the product logged during the test, whatever Airflow did to logging propagation."""
    import logging

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

        @property
        def text(self) -> str:
            return "\n".join(self.lines)

    logger = logging.getLogger("github_collector")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)
