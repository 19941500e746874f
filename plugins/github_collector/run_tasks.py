"""Bodies of the DAG's plan and commit tasks (the DAG file only wires them)."""

from __future__ import annotations

import datetime as dt
import logging
import queue
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from github_collector import loader, metrics, settings
from github_collector.collector import relist_due
from github_collector.errors import ConfigError
from github_collector.plan import InvalidInput, build_plan
from github_collector.queries import DEFAULT_MAX_AUTHOR_PAGES
from github_collector.staging import (
    KINDS,
    LOST_MESSAGE,
    ReadAhead,
    Staging,
    StagingLost,
    Tally,
    check_redis,
    run_namespace,
)

log = logging.getLogger(__name__)
MIN_SPLIT = 1000  # smallest chunk a kind is split into to keep every commit worker busy


class BatchesFailed(RuntimeError):
    """Batches of the run did not finish: what was staged is committed. Not retried (the commit
    task fails at once): a retry of the commit cannot finish them, clearing their slots can."""


class PlanFailed(RuntimeError):
    """The commit found no plan because the plan task never recorded one."""


PLANNED = "planned"  # github_collect_run.status once the plan task recorded the run's plan


def _redis(redis_conn_id: str):
    from airflow.providers.redis.hooks.redis import RedisHook

    return RedisHook(redis_conn_id=redis_conn_id).get_conn()


def check_connections(
    github_conn_id: str,
    postgres_conn_id: str,
    redis_conn_id: str = settings.REDIS_CONN_ID,
    repos: list[str] | None = None,
) -> None:
    """Check the GitHub connection (its settings, and its tokens with the free GET /rate_limit)
    and that the Postgres connection exists.

    A missing or malformed connection, or tokens GitHub rejects, then fail the plan before
    anything is written, instead of the fetch or the commit after quota was spent.
    """
    from airflow.providers.common.compat.sdk import BaseHook

    from github_collector.hook import GitHubHook

    # Postgres first: it costs nothing, and a plan refused for it leaves GitHub unasked.
    try:
        BaseHook.get_connection(postgres_conn_id)
    except Exception as exc:
        raise ConfigError(
            f"Airflow connection {postgres_conn_id!r} is missing or unreadable ({type(exc).__name__}); "
            "create it for the target Postgres database"
        ) from None
    hook = GitHubHook(github_conn_id, redis_conn_id, key_prefix=settings.key_prefix())
    # Through the account leases: workers of other runs (on other machines, under Celery) may
    # be sending for these accounts right now, and GitHub wants one request at a time.
    hook.check_tokens(quota=hook.get_quota_store(), repos=repos)


def day_number(logical_date: Any = None) -> int:
    """The run's day (proleptic ordinal of its UTC date): the logical date's, else today's
    (Airflow 3 manual runs may have no logical date)."""
    if isinstance(logical_date, str):
        logical_date = dt.datetime.fromisoformat(logical_date)
    when = logical_date if isinstance(logical_date, dt.datetime) else dt.datetime.now(dt.UTC)
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.date().toordinal()


def _pg(postgres_conn_id: str):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=postgres_conn_id).get_conn()


def schedule(plan: dict, conn: Any, relist_every: int, max_age_hours: float) -> None:
    """Add to the plan what the stored state asks of this run: which repositories are due for
    their complete re-listing (``relist``) and, per batch, the stored users whose profiles are
    older than the max age (``stale_profiles``, each user in one batch only)."""
    plan["relist_days"] = relist_every
    plan["relist"], plan["stale_profiles"] = [], {}
    if plan["full_refresh"]:
        return  # everything is listed and every profile fetched anyway
    previous = loader.previous_state(conn, plan["repositories"])
    ids = {name: p["repo_id"] for name, p in previous.items() if p.get("repo_id") is not None}
    plan["relist"] = sorted(
        name
        for name, rid in ids.items()
        if relist_due(rid, previous[name].get("relation_state") or {}, plan["day"], relist_every)
    )
    batch_of = {name: i for i, batch in enumerate(plan["batches"]) for name in batch}
    batch_of_id: dict[int, int] = {}
    for name, rid in ids.items():
        batch_of_id.setdefault(rid, batch_of[name])  # a repository requested under two names
    relisted = [ids[n] for n in plan["relist"]]
    stale = loader.stale_profiles(conn, sorted(batch_of_id), max_age_hours, relisted, plan["relations"])
    for node_id, user_id, login, kind, repo_id in stale:
        plan["stale_profiles"].setdefault(str(batch_of_id[repo_id]), []).append(
            [node_id, user_id, login, kind]
        )
    log.info(
        "day %s: %d of %d stored repositories due for their complete re-listing (every %d days); "
        "%d stored profiles older than %s h to fetch again",
        plan["day"],
        len(plan["relist"]),
        len(ids),
        relist_every,
        len(stale),
        max_age_hours,
    )


def plan_run(
    params: dict,
    dag_id: str,
    run_id: str,
    redis_conn_id: str = settings.REDIS_CONN_ID,
    github_conn_id: str = settings.GITHUB_CONN_ID,
    postgres_conn_id: str = settings.POSTGRES_CONN_ID,
    logical_date: Any = None,
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
            params.get("max_author_pages", DEFAULT_MAX_AUTHOR_PAGES),
        )
        plan["day"] = day_number(logical_date)
        relist_every = settings.relist_days()
        max_age = settings.profile_max_age_hours()
        redis = _redis(redis_conn_id)
        # Before the token check, which takes token leases in this Redis.
        check_redis(redis, settings.allow_evicting_redis())
        check_connections(github_conn_id, postgres_conn_id, redis_conn_id, repos=plan["repositories"])
    except (InvalidInput, ConfigError) as exc:
        raise AirflowFailException(str(exc)) from None
    ns = run_namespace(settings.key_prefix(), dag_id, run_id)
    staging = Staging(redis, ns)
    existing = staging.load_plan()
    same = (
        existing is not None
        and existing["batches"] == plan["batches"]
        and existing["relations"] == plan["relations"]
    )
    conn = _pg(postgres_conn_id)
    try:
        loader.ensure_schema(conn)
        problems = staging.verify(len(plan["batches"])).problems if same else []
        if same and not problems:
            log.info("plan already recorded for this run; keeping its checkpoints")
        else:
            # Checkpoints of another plan would resume the wrong batches, and checkpoints whose
            # staged records Redis lost would skip them: start the run's staging over.
            if problems:
                log.warning("this run's staging is incomplete (%s): collecting it again", "; ".join(problems))
            schedule(plan, conn, relist_every, max_age)
            staging.drop()
            staging.save_plan(plan)
        # Once the plan is in Redis: the commit tells a plan that never finished from staging
        # Redis lost by this row.
        loader.record_run(conn, ns, dag_id, run_id, logical_date, PLANNED, {"batches": len(plan["batches"])})
    finally:
        conn.close()
    if same and not problems:
        plan = existing  # its schedule and stale profiles, as its batches started with them
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
        "relist": len(plan.get("relist") or ()),
        "stale_profiles": sum(len(v) for v in (plan.get("stale_profiles") or {}).values()),
    }


def asset_extra(counts: dict) -> dict:
    """What the commit's Asset event carries: the run's counts, JSON-safe and small (no table of
    batches), for a consumer DAG to read without querying Postgres."""
    return {
        "committed": dict(counts.get("committed") or {}),
        "staged": dict(counts.get("staged") or {}),
        "dead_letters": counts.get("dead_letters", 0),
        "batches": counts.get("batches", 0),
        "quota": counts.get("quota"),
        "commit_time": counts.get("commit_time"),
        "tables": dict(counts.get("tables") or {}),
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
    except (StagingLost, PlanFailed, BatchesFailed) as exc:
        # Retrying the commit cannot bring lost staging back, make a failed plan succeed or
        # finish batches that did not: fail at once, saying why (AirflowFailException is not
        # retried on Airflow 2.11 nor 3.x).
        raise AirflowFailException(str(exc)) from exc


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
        if not _was_planned(postgres_conn_id, ns):
            raise PlanFailed(
                "the plan task of this run did not finish (it failed, or never ran), so nothing was "
                "collected and nothing is committed; see the plan task's log for the cause, fix it "
                "and clear the whole run"
            )
        raise StagingLost(LOST_MESSAGE)
    n_batches = len(plan["batches"])
    # Every staged key against the counts the steps kept, before anything is written.
    tally = staging.verify(n_batches)
    staged = dict(tally.expected)
    quota = staging.stats()
    # One time stamps every row of the run, on every attempt: a relation this run saw has
    # last_seen_at >= it, which is how the final pass tells who a complete listing lacked.
    stamp = staging.commit_time(dt.datetime.now(dt.UTC).isoformat())
    commit_time = dt.datetime.fromisoformat(stamp) if stamp else None
    if commit_time is None and tally.intact:  # the sentinel went after verify() read it
        tally.problems.append("the loss sentinel is gone")
    outcomes = tally.outcomes

    def connect() -> Any:  # a hook per connection: one hook's get_conn() is not thread-safe
        return PostgresHook(postgres_conn_id=postgres_conn_id).get_conn()

    conns: list = []
    extra: list[Future] = []
    writers: list[loader.ChunkWriter] = []
    committed = dict.fromkeys(DELETES, 0)
    lost = None if tally.intact else _lost_message(tally, staged, committed, during=False)
    try:
        # Redis is read (in a thread) while Postgres connects; the workers' connections open
        # while the first one migrates the schema.
        with (
            ReadAhead(
                _chunks(staging, tally.present, chunk, workers, skip=bool(lost)), depth=workers
            ) as reads,
            ThreadPoolExecutor(workers, "commit-writer") as pool,
        ):
            extra = [pool.submit(connect) for _ in range(workers - 1)]
            conns.append(connect())
            loader.ensure_schema(conns[0])
            conns.extend(f.result() for f in extra)
            extra = []
            writers = [loader.ChunkWriter(c, run_key=ns) for c in conns]
            if not lost:
                committed, lost = _commit_chunks(
                    staging, reads, writers, pool, staged, n_batches, commit_time
                )
        failed = sorted(i for i, o in outcomes.items() if o != "done")
        claims = staging.claims() if failed else {}
        dead = loader.dead_letter_count(conns[0], ns, commit_time) if commit_time else 0
        counts = {
            "committed": committed,
            "staged": staged,
            "dead_letters": dead,
            "batches": n_batches,
            "failed_batches": failed,
            "quota": quota,
            "retries": sum(w.retries for w in writers),
            "chunk_splits": sum(w.splits for w in writers),
            "commit_time": stamp,
            "tables": loader.table_counts(conns[0]),
        }
        if lost:
            counts["lost"] = lost
        status = (
            "lost" if lost else "partial" if failed else "complete_with_dead_letters" if dead else "complete"
        )
        loader.record_run(conns[0], ns, dag_id, run_id, logical_date, status, counts)
        for kind, n in committed.items():
            metrics.incr("commit_rows.<kind>", n, kind=kind)
        for table, n in counts["tables"].items():
            metrics.gauge("table_rows.<table>", n, table=table)
    finally:
        for f in extra:  # opened, but not collected before a failure
            if not f.cancelled() and f.exception() is None:
                f.result().close()
        for c in conns:
            c.close()
    log.info("commit %s: %s", status, counts)
    if lost:
        raise StagingLost(lost)
    if dead:
        log.warning(
            "%d staged record(s) of this run were refused by Postgres and are in %s "
            "(run_key = %r, commit_time = %s), with the SQLSTATE and message of each; every other "
            "record is committed. The run is recorded %r",
            dead,
            loader.DEAD_LETTER_TABLE,
            ns,
            stamp,
            status,
        )
    if failed:
        # Checkpoints of the failed batches stay in Redis, so clearing them resumes where they stopped.
        where = ", ".join(
            f"{i} ({'slot ' + str(claims[i]) if i in claims else 'never started'})" for i in failed[:20]
        )
        raise BatchesFailed(
            f"{len(failed)} of {n_batches} batches did not finish: {where}; what was staged "
            "is committed, but the run is not complete. Clear the failed fetch slots (or the whole run) "
            "to resume them from their checkpoints"
        )
    staging.drop()
    return counts


def _was_planned(postgres_conn_id: str, run_key: str) -> bool:
    """Whether this run's plan was recorded in Redis, as github_collect_run tells."""
    conn = _pg(postgres_conn_id)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM github_collect_run WHERE run_key = %s", (run_key,))
            row = cur.fetchone()
        # 'planned': recorded by this run's plan; 'partial': a commit of it left its staging for
        # the failed batches. Other statuses end with the staging dropped (or a run to clear):
        # finding no plan then means the latest plan attempt did not finish.
        found = row is not None and row[0] in (PLANNED, "partial")
        conn.commit()
        return found
    except Exception as exc:  # no table: no run was ever planned in this database
        conn.rollback()
        if "does not exist" in str(exc):
            return False
        raise
    finally:
        conn.close()


def _commit_chunks(
    staging: Staging,
    reads: Iterator[tuple[str, list[bytes], list[bytes]]],
    writers: list[loader.ChunkWriter],
    pool: ThreadPoolExecutor,
    staged: dict[str, int],
    n_batches: int,
    commit_time: dt.datetime,
) -> tuple[dict[str, int], str | None]:
    """Apply every chunk read, kind after kind, up to one per writer (connection) at a time.

    Each chunk is one transaction, and its fields are deleted from Redis by the same worker
    right after that transaction committed (records it refused are in the dead-letter table
    by then). Links refer to repos and users, so a kind starts only once every chunk of the
    previous one committed; the staging is checked against its tallies then, because a key
    Redis lost ends a scan as if everything had been read.
    """
    committed = dict.fromkeys(DELETES, 0)
    free: queue.Queue[loader.ChunkWriter] = queue.Queue()
    for w in writers:
        free.put(w)
    pending: list[tuple[str, Future[int]]] = []

    def apply(writer: loader.ChunkWriter, kind: str, fields: list[bytes], values: list[bytes]) -> int:
        try:
            dead = writer.apply(kind, values, commit_time, fields)
            if DELETES[kind]:
                staging.delete_fields(SOURCE[kind], fields)  # only after the chunk committed
            return len(values) - dead
        finally:
            free.put(writer)

    def settle(wait: bool) -> None:
        """Count the finished chunks (all of them if ``wait``); raise the first failure."""
        if wait:
            futures.wait([f for _, f in pending])
        for kind, f in [p for p in pending if p[1].done()]:
            pending.remove((kind, f))
            committed[kind] += f.result()

    def check() -> str | None:
        tally = staging.verify(n_batches)
        return None if tally.intact else _lost_message(tally, staged, committed, during=True)

    current = None
    try:
        for kind, fields, values in reads:
            if kind != current:
                settle(wait=True)
                if current is not None and (lost := check()):
                    return committed, lost
                current = kind
            writer = free.get()
            settle(wait=False)
            pending.append((kind, pool.submit(apply, writer, kind, fields, values)))
    finally:
        futures.wait([f for _, f in pending])  # no chunk is left running, even on a failure
    settle(wait=True)
    return committed, check()


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
    staging: Staging, present: dict[str, int], chunk: int, workers: int, skip: bool = False
) -> Iterator[tuple[str, list[bytes], list[bytes]]]:
    if skip:  # the staging is known lost: nothing of it is committed
        return
    for name, kind, _ in PASSES:
        # A small kind is split so that every worker gets a chunk, down to MIN_SPLIT records.
        size = min(chunk, max(MIN_SPLIT, -(-present[kind] // workers)))
        # Chunks read but perhaps not deleted yet: one per worker, the read-ahead queue, this one.
        for fields, values in staging.scan_raw(kind, size, recent=2 * workers + 2):
            yield name, fields, values


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {k}" for k, n in counts.items())


def _lost_message(tally: Tally, staged: dict[str, int], committed: dict[str, int], during: bool) -> str:
    """What Redis lost of this run, for the failure and the run's record."""
    # Without the sentinel nothing says what is left: every record not committed counts as lost.
    if tally.tallied:
        missing = tally.missing
    else:
        missing = {k: staged[k] - committed[k] for k in KINDS if staged[k] > committed[k]}
    when = (
        "vanished from Redis during the commit" if during else "in Redis was incomplete when the commit began"
    )
    return (
        f"this run's staging {when} (Redis was flushed, restarted without persistence, or evicted "
        f"or expired keys): {'; '.join(tally.problems)}. Staged when the commit began: {_fmt(staged)}; "
        f"committed: {_fmt({k: committed[k] for k in KINDS})}; lost: "
        f"{_fmt(missing) or 'no staged record, only the checkpoints'}. "
        "The run is recorded as 'lost'; clear the whole run to fetch again"
    )
