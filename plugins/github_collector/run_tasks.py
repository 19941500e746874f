"""Bodies of the DAG's plan and commit tasks (the DAG file only wires them)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from github_collector import loader, settings
from github_collector.plan import build_plan
from github_collector.staging import Staging, StagingLost, run_namespace

log = logging.getLogger(__name__)
KINDS = ("repos", "users", "links")  # commit order: links refer to repos and users


class BatchesFailed(RuntimeError):
    pass


def _redis(redis_conn_id: str):
    from airflow.providers.redis.hooks.redis import RedisHook

    return RedisHook(redis_conn_id=redis_conn_id).get_conn()


def plan_run(
    params: dict, dag_id: str, run_id: str, redis_conn_id: str = settings.REDIS_CONN_ID
) -> list[list[str]]:
    """Validate params (before any side effect), batch, and record the plan in Redis."""
    plan = build_plan(
        params.get("repositories"),
        params.get("relations"),
        params.get("batch_size"),
        params.get("full_refresh", False),
    )
    staging = Staging(_redis(redis_conn_id), run_namespace(settings.key_prefix(), dag_id, run_id))
    existing = staging.load_plan()
    if (
        existing is not None
        and existing["batches"] == plan["batches"]
        and existing["relations"] == plan["relations"]
    ):
        log.info("plan already recorded for this run; keeping its checkpoints")
    else:
        staging.save_plan(plan)
    log.info(
        "%d repositories in %d batches of up to %d",
        len(plan["repositories"]),
        len(plan["batches"]),
        plan["batch_size"],
    )
    return plan["batches"]


def commit_run(
    dag_id: str,
    run_id: str,
    logical_date: Any = None,
    redis_conn_id: str = settings.REDIS_CONN_ID,
    postgres_conn_id: str = settings.POSTGRES_CONN_ID,
    chunk: int | None = None,
) -> dict:
    """Upsert everything staged, chunk by chunk; fail after committing if a batch failed."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    chunk = chunk or settings.commit_chunk()
    ns = run_namespace(settings.key_prefix(), dag_id, run_id)
    staging = Staging(_redis(redis_conn_id), ns)
    plan = staging.load_plan()
    if plan is None:
        raise StagingLost("this run's plan is gone from Redis: nothing can be committed; clear the whole run")
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
        raise BatchesFailed(
            f"{len(failed)} of {len(plan['batches'])} batches did not finish (indexes {failed[:20]}); "
            "what they and the others staged is committed, the run is not complete"
        )
    staging.drop()
    return counts
