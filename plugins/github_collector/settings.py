"""Names and knobs shared by the DAG and its operators, read at task run time only."""

from __future__ import annotations

import os

from github_collector.errors import ConfigError

GITHUB_CONN_ID = "github_default"
REDIS_CONN_ID = "redis_default"
POSTGRES_CONN_ID = "postgres_default"
DAG_ID = "github_repo_users"
USERS_ASSET_NAME = "github_repo_users.github_user"


def key_prefix() -> str:
    """Redis key prefix; an env var lets tests and side-by-side installs keep apart."""
    return os.environ.get("GITHUB_REPO_USERS_REDIS_PREFIX", "ghc:")


def commit_chunk() -> int:
    return int(os.environ.get("GITHUB_REPO_USERS_COMMIT_CHUNK", "5000"))


def commit_workers() -> int:
    """Postgres connections the commit applies chunks on at once (one transaction per chunk)."""
    return max(1, int(os.environ.get("GITHUB_REPO_USERS_COMMIT_WORKERS", "2")))


def allow_evicting_redis() -> bool:
    """GITHUB_REPO_USERS_ALLOW_EVICTING_REDIS=1: run on a Redis that may evict staged data (unsafe)."""
    raw = os.environ.get("GITHUB_REPO_USERS_ALLOW_EVICTING_REDIS", "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"GITHUB_REPO_USERS_ALLOW_EVICTING_REDIS={raw!r} must be 1 or 0")


def profile_max_age_hours() -> float:
    return float(os.environ.get("GITHUB_REPO_USERS_PROFILE_MAX_AGE_HOURS", "168"))


DEFAULT_RELIST_DAYS = 7
MAX_RELIST_DAYS = 366


def relist_days() -> int:
    """Every how many days each repository's lists are read in full, whatever their counts
    (GITHUB_REPO_USERS_RELIST_DAYS, default 7; 0 turns it off). Repositories are spread over
    the days by a hash of their id, so each day re-lists about 1/N of them."""
    raw = os.environ.get("GITHUB_REPO_USERS_RELIST_DAYS", "").strip()
    if not raw:
        return DEFAULT_RELIST_DAYS
    if not raw.isdigit() or int(raw) > MAX_RELIST_DAYS:
        raise ConfigError(
            f"GITHUB_REPO_USERS_RELIST_DAYS={raw!r} must be a whole number of days from 0 (off) "
            f"to {MAX_RELIST_DAYS}"
        )
    return int(raw)


DEFAULT_FETCH_SLOTS = 8
MAX_FETCH_SLOTS = 256


def fetch_slots() -> int:
    """How many mapped fetch slots the DAG has; read when the DAG file is parsed.

    The count is fixed at parse time on purpose: expanding over a list known when the file
    is parsed (not over an upstream task's XCom) is what `airflow dags backfill` on Airflow
    2.11 can run without deadlocking. Slots claim the run's batches as they go, so any number
    of batches fits any number of slots. Every Airflow component must see the same value.
    """
    raw = os.environ.get("GITHUB_REPO_USERS_FETCH_SLOTS", "").strip()
    if not raw:
        return DEFAULT_FETCH_SLOTS
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_FETCH_SLOTS:
        raise ValueError(
            f"GITHUB_REPO_USERS_FETCH_SLOTS={raw!r} must be an integer from 1 to {MAX_FETCH_SLOTS}"
        )
    return int(raw)
