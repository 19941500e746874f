"""Bodies of the DAG's plan and commit tasks (the DAG file only wires them)."""

from __future__ import annotations

import datetime as dt
import logging
import queue
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from github_collector import loader, settings
from github_collector.errors import ConfigError
from github_collector.plan import InvalidInput, build_plan
from github_collector.staging import KINDS, LOST_MESSAGE, ReadAhead, Staging, StagingLost, run_namespace

log = logging.getLogger(__name__)
MIN_SPLIT = 1000  # smallest chunk a kind is split into to keep every commit worker busy


class BatchesFailed(RuntimeError):
    pass


def _redis(redis_conn_id: str):
    from airflow.providers.redis.hooks.redis import RedisHook

    return RedisHook(redis_conn_id=redis_conn_id).get_conn()


def check_connections(
    github_conn_id: str, postgres_conn_id: str, redis_conn_id: str = settings.REDIS_CONN_ID
) -> None:
    """Check the GitHub connection (its settings, and its tokens with the free GET /rate_limit)
    and that the Postgres connection exists.

    A missing or malformed connection, or tokens GitHub rejects, then fail the plan before
    anything is written, instead of the fetch or the commit after quota was spent.
    """
    from airflow.providers.common.compat.sdk import BaseHook

    from github_collector.hook import GitHubHook

    hook = GitHubHook(github_conn_id, redis_conn_id, key_prefix=settings.key_prefix())
    # Through the token leases: workers of other runs (on other machines, under Celery) may be
    # sending with these tokens right now, and GitHub wants one request at a time per token.
    hook.check_tokens(quota=hook.get_quota_store())
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
        check_connections(github_conn_id, postgres_conn_id, redis_conn_id)
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
    workers: int | None = None,
) -> dict:
    """Upsert everything staged, chunk by chunk; fail after committing if a batch failed.

    Lost staging fails at once, without Airflow's retries: retrying cannot bring it back.
    """
    from airflow.providers.common.compat.sdk import AirflowFailException

    try:
        return _commit(dag_id, run_id, logical_date, redis_conn_id, postgres_conn_id, chunk, workers)
    except StagingLost as exc:
        raise AirflowFailException(str(exc)) from None


def _commit(
    dag_id: str,
    run_id: str,
    logical_date: Any,
    redis_conn_id: str,
    postgres_conn_id: str,
    chunk: int | None,
    workers: int | None,
) -> dict:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    chunk = chunk or settings.commit_chunk()
    workers = workers or settings.commit_workers()
    ns = run_namespace(settings.key_prefix(), dag_id, run_id)
    staging = Staging(_redis(redis_conn_id), ns)
    plan = staging.load_plan()
    if plan is None:
        raise StagingLost(LOST_MESSAGE)
    # What is staged, read before the sentinel check, so that a loss is measured against it.
    staged = staging.counts()
    quota = staging.stats()
    staging.check_intact()
    outcomes = staging.outcomes(len(plan["batches"]))

    def connect() -> Any:  # a hook per connection: one hook's get_conn() is not thread-safe
        return PostgresHook(postgres_conn_id=postgres_conn_id).get_conn()

    conns: list = []
    extra: list[Future] = []
    try:
        # Redis is read (in a thread) while Postgres connects; the workers' connections open
        # while the first one migrates the schema.
        with (
            ReadAhead(_chunks(staging, staged, chunk, workers), depth=workers) as reads,
            ThreadPoolExecutor(workers, "commit-writer") as pool,
        ):
            extra = [pool.submit(connect) for _ in range(workers - 1)]
            conns.append(connect())
            loader.ensure_schema(conns[0])
            conns.extend(f.result() for f in extra)
            extra = []
            writers = [loader.ChunkWriter(c) for c in conns]
            committed, lost = _commit_chunks(staging, reads, writers, pool, staged)
        failed = sorted(i for i, o in outcomes.items() if o != "done")
        claims = staging.claims() if failed else {}
        counts = {
            "committed": committed,
            "staged": staged,
            "batches": len(plan["batches"]),
            "failed_batches": failed,
            "quota": quota,
            "retries": sum(w.retries for w in writers),
            "tables": loader.table_counts(conns[0]),
        }
        status = "lost" if lost else "partial" if failed else "complete"
        loader.record_run(conns[0], ns, dag_id, run_id, logical_date, status, counts)
    finally:
        for f in extra:  # opened, but not collected before a failure
            if not f.cancelled() and f.exception() is None:
                f.result().close()
        for c in conns:
            c.close()
    log.info("commit %s: %s", status, counts)
    if lost:
        raise StagingLost(lost)
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


def _commit_chunks(
    staging: Staging,
    reads: Iterator[tuple[str, list[bytes], list[bytes]]],
    writers: list[loader.ChunkWriter],
    pool: ThreadPoolExecutor,
    staged: dict[str, int],
) -> tuple[dict[str, int], str | None]:
    """Apply every chunk read, kind after kind, up to one per writer (connection) at a time.

    Each chunk is one transaction, and its fields are deleted from Redis by the same worker
    right after that transaction committed. Links refer to repos and users, so a kind starts
    only once every chunk of the previous one committed; the loss sentinel is checked then,
    because a flushed Redis ends a scan as if everything had been read.
    """
    committed = dict.fromkeys(DELETES, 0)
    free: queue.Queue[loader.ChunkWriter] = queue.Queue()
    for w in writers:
        free.put(w)
    pending: list[tuple[str, Future[int]]] = []

    def apply(writer: loader.ChunkWriter, kind: str, fields: list[bytes], values: list[bytes]) -> int:
        try:
            writer.apply(kind, values, dt.datetime.now(dt.UTC))
            if DELETES[kind]:
                staging.delete_fields(SOURCE[kind], fields)  # only after the chunk committed
            return len(values)
        finally:
            free.put(writer)

    def settle(wait: bool) -> None:
        """Count the finished chunks (all of them if ``wait``); raise the first failure."""
        if wait:
            futures.wait([f for _, f in pending])
        for kind, f in [p for p in pending if p[1].done()]:
            pending.remove((kind, f))
            committed[kind] += f.result()

    current = None
    try:
        for kind, fields, values in reads:
            if kind != current:
                settle(wait=True)
                if current is not None and (lost := _lost(staging, staged, committed)):
                    return committed, lost
                current = kind
            writer = free.get()
            settle(wait=False)
            pending.append((kind, pool.submit(apply, writer, kind, fields, values)))
    finally:
        futures.wait([f for _, f in pending])  # no chunk is left running, even on a failure
    settle(wait=True)
    return committed, _lost(staging, staged, committed)


# The commit's passes: (what is applied, from which staged hash, delete its fields after).
# Links refer to repos and users, so those go first; the repositories' relation_state, which
# incremental runs trust, goes last (loader.UPSERT_REPO_STATE), so the repos' staged records
# stay in Redis until then.
PASSES = (
    ("repos", "repos", False),
    ("users", "users", True),
    ("links", "links", True),
    ("repo_state", "repos", True),
)
SOURCE = {name: kind for name, kind, _ in PASSES}
DELETES = {name: delete for name, _, delete in PASSES}


def _chunks(
    staging: Staging, staged: dict[str, int], chunk: int, workers: int
) -> Iterator[tuple[str, list[bytes], list[bytes]]]:
    for name, kind, _ in PASSES:
        # A small kind is split so that every worker gets a chunk, down to MIN_SPLIT records.
        size = min(chunk, max(MIN_SPLIT, -(-staged[kind] // workers)))
        # Chunks read but perhaps not deleted yet: one per worker, the read-ahead queue, this one.
        for fields, values in staging.scan_raw(kind, size, recent=2 * workers + 2):
            yield name, fields, values


def _lost(staging: Staging, staged: dict[str, int], committed: dict[str, int]) -> str | None:
    """What was lost if the run's staging vanished from Redis during the commit, else None."""
    try:
        staging.check_intact()
    except StagingLost:
        missing = {k: staged[k] - committed[k] for k in KINDS if staged[k] > committed[k]}

        def fmt(counts: dict[str, int]) -> str:
            return ", ".join(f"{n:,} {k}" for k, n in counts.items())

        return (
            "this run's staging vanished from Redis during the commit (Redis was flushed or restarted "
            f"without persistence). Staged when the commit began: {fmt(staged)}; committed: "
            f"{fmt(committed)}; lost: {fmt(missing) or 'no staged record, only the checkpoints'}. "
            "The run is recorded as 'lost'; clear the whole run to fetch again"
        )
    return None
