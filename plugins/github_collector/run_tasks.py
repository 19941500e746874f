"""Bodies of the DAG's plan and commit tasks (the DAG file only wires them)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from github_collector import loader, settings
from github_collector.errors import ConfigError
from github_collector.plan import InvalidInput, build_plan
from github_collector.staging import LOST_MESSAGE, Staging, StagingLost, run_namespace

log = logging.getLogger(__name__)
KINDS = ("repos", "users", "links")  # commit order: links refer to repos and users


class BatchesFailed(RuntimeError):
    pass


def _redis(redis_conn_id: str):
    from airflow.providers.redis.hooks.redis import RedisHook

    return RedisHook(redis_conn_id=redis_conn_id).get_conn()


def check_connections(github_conn_id: str, postgres_conn_id: str) -> None:
    """Check the GitHub connection (its settings, and its tokens with the free GET /rate_limit)
    and that the Postgres connection exists.

    A missing or malformed connection, or tokens GitHub rejects, then fail the plan before
    anything is written, instead of the fetch or the commit after quota was spent.
    """
    from airflow.providers.common.compat.sdk import BaseHook

    from github_collector.hook import GitHubHook

    GitHubHook(github_conn_id).check_tokens()
    try:
        BaseHook.get_connection(postgres_conn_id)
    except Exception as exc:
        raise ConfigError(
            f"Airflow connection {postgres_conn_id!r} is missing or unreadable ({type(exc).__name__}); "
            "create it for the target Postgres database"
        ) from None


def plan_run(
    params: dict,
    dag_id: str,
    run_id: str,
    redis_conn_id: str = settings.REDIS_CONN_ID,
    github_conn_id: str = settings.GITHUB_CONN_ID,
    postgres_conn_id: str = settings.POSTGRES_CONN_ID,
) -> dict:
    """Validate params (before any side effect), batch, and record the plan in Redis.

    Returns a summary; the fetch slots read the plan itself from Redis.
    """
    from airflow.providers.common.compat.sdk import AirflowFailException

    try:
        plan = build_plan(
            params.get("repositories"),
            params.get("relations"),
            params.get("batch_size"),
            params.get("full_refresh", False),
        )
        check_connections(github_conn_id, postgres_conn_id)
    except (InvalidInput, ConfigError) as exc:
        raise AirflowFailException(str(exc)) from None
    staging = Staging(_redis(redis_conn_id), run_namespace(settings.key_prefix(), dag_id, run_id))
    existing = staging.load_plan()
    if (
        existing is not None
        and existing["batches"] == plan["batches"]
        and existing["relations"] == plan["relations"]
    ):
        log.info("plan already recorded for this run; keeping its checkpoints")
    else:
        if existing is not None:  # checkpoints of another plan would resume the wrong batches
            staging.drop()
        staging.save_plan(plan)
    log.info(
        "%d repositories in %d batches of up to %d",
        len(plan["repositories"]),
        len(plan["batches"]),
        plan["batch_size"],
    )
    return {
        "repositories": len(plan["repositories"]),
        "batches": len(plan["batches"]),
        "batch_size": plan["batch_size"],
        "relations": plan["relations"],
        "full_refresh": plan["full_refresh"],
    }


def commit_run(
    dag_id: str,
    run_id: str,
    logical_date: Any = None,
    redis_conn_id: str = settings.REDIS_CONN_ID,
    postgres_conn_id: str = settings.POSTGRES_CONN_ID,
    chunk: int | None = None,
) -> dict:
    """Upsert everything staged, chunk by chunk; fail after committing if a batch failed.

    Lost staging fails at once, without Airflow's retries: retrying cannot bring it back.
    """
    from airflow.providers.common.compat.sdk import AirflowFailException

    try:
        return _commit(dag_id, run_id, logical_date, redis_conn_id, postgres_conn_id, chunk)
    except StagingLost as exc:
        raise AirflowFailException(str(exc)) from None


def _commit(
    dag_id: str,
    run_id: str,
    logical_date: Any,
    redis_conn_id: str,
    postgres_conn_id: str,
    chunk: int | None,
) -> dict:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    chunk = chunk or settings.commit_chunk()
    ns = run_namespace(settings.key_prefix(), dag_id, run_id)
    staging = Staging(_redis(redis_conn_id), ns)
    plan = staging.load_plan()
    if plan is None:
        raise StagingLost(LOST_MESSAGE)
    staging.check_intact()
    outcomes = staging.outcomes(len(plan["batches"]))
    conn = PostgresHook(postgres_conn_id=postgres_conn_id).get_conn()
    try:
        loader.ensure_schema(conn)
        committed = {k: 0 for k in KINDS}
        for kind in KINDS:
            for fields, docs in staging.scan(kind, chunk):
                staged_at = dt.datetime.now(dt.UTC).isoformat()
                loader.apply_chunk(conn, kind, docs, staged_at)
                staging.delete_fields(kind, fields)  # only after the chunk's transaction committed
                committed[kind] += len(docs)
        failed = sorted(i for i, o in outcomes.items() if o != "done")
        claims = staging.claims() if failed else {}
        counts = {
            "committed": committed,
            "batches": len(plan["batches"]),
            "failed_batches": failed,
            "quota": staging.stats(),
            "tables": loader.table_counts(conn),
        }
        status = "partial" if failed else "complete"
        loader.record_run(conn, ns, dag_id, run_id, logical_date, status, counts)
    finally:
        conn.close()
    log.info("commit %s: %s", status, counts)
    if failed:
        # Checkpoints of the failed batches stay in Redis, so clearing them resumes where they stopped.
        where = ", ".join(
            f"{i} ({'slot ' + str(claims[i]) if i in claims else 'never started'})" for i in failed[:20]
        )
        raise BatchesFailed(
            f"{len(failed)} of {len(plan['batches'])} batches did not finish: {where}; what was staged "
            "is committed, but the run is not complete. Clear the failed fetch slots (or the whole run) "
            "to resume them from their checkpoints"
        )
    staging.drop()
    return counts
