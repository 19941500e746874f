"""The mapped fetch task: one slot collecting the run's batches into Redis, resumable at any page.

A slot claims batches one at a time (``Staging.next_batch``) and collects each with a
checkpoint after every step. On quota exhaustion the checkpoint is already stored, so the
task defers itself to the triggerer until the earliest reset and resumes from it: no worker
slot is held while waiting, and no staged page is fetched again. A retried slot first
finishes the batch it had claimed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException, BaseOperator

from github_collector import metrics, progress, settings
from github_collector.collector import Collector, Step, batch_state
from github_collector.errors import (
    ConfigError,
    ForeignHost,
    GraphQLQueryError,
    NoUsableToken,
    QuotaExhausted,
)
from github_collector.hook import GitHubHook
from github_collector.staging import LOST_MESSAGE, Staging, StagingLost, run_namespace
from github_collector.waiting import plan_wait

# A progress line at most this often (and after any page read slower than that): a page
# every few milliseconds would flood the log, a line only every minute would tell too little.
PROGRESS_EVERY_S = 5.0
# Batches a slot may hold beyond the one it works on, claimed to read their REST lists while
# GraphQL is spent (it finishes them later, in order): enough to keep REST going through a
# GraphQL wait, few enough that one slot does not take the run's tail from the others.
READ_AHEAD_BATCHES = 3
MAX_INLINE_WAITS = 20  # quota waits slept through for one batch before deferring anyway


class _StagingSink:
    """Where the collector's steps go: the current batch's staging, one atomic write per step.

    After each write it sends the step's metrics and, at most every ``PROGRESS_EVERY_S``, hands
    the state to ``report`` for a progress line."""

    def __init__(
        self,
        staging: Staging,
        report: Callable[[dict, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.staging = staging
        self.batch = -1
        self.report = report
        self.clock = clock
        self.pages = 0  # this process, this batch: the rate the ETA is worked out from
        self.users = 0
        self.started = clock()
        self._last = self.started

    def start_batch(self, batch: int) -> None:
        self.batch = batch
        self.pages = 0
        self.started = self._last = self.clock()

    def write(self, step: Step) -> None:
        self.staging.write_step(self.batch, step)
        self.pages += step.pages
        self.users += len(step.users)
        metrics.incr("pages_staged", step.pages)
        metrics.incr("users_staged", len(step.users))
        now = self.clock()
        if self.report is not None and now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            self.report(step.state, False)


def slot_label(slot: int, batches: list[int], plan: dict) -> str:
    """What the Airflow UI shows for a mapped slot (map_index_template)."""
    if not batches:
        return f"slot {slot}: no batch left"
    repos = sum(len(plan["batches"][i]) for i in batches)
    first = plan["batches"][batches[0]][0]
    return f"slot {slot}: {first} … ({len(batches)} batch(es), {repos} repos)"


def slot_sentence(summary: dict, users: int) -> str:
    """The slot's summary as a sentence a person reads at the end of the log."""
    batches = summary["batches"]
    rejected = summary["rejected_tokens"]
    return (
        f"Slot {summary['slot']} done: {len(batches)} batch(es) ({', '.join(map(str, batches)) or 'none'}), "
        f"{len(summary['finished_now'])} finished in this attempt; {users:,} user record(s) staged; "
        f"{summary['requests']:,} request(s) to GitHub spending {summary['core_spent']:,} REST unit(s) "
        f"and {summary['graphql_spent']:,} GraphQL point(s); {summary['not_modified']:,} list(s) "
        f"unchanged (304, free); {summary['secondary_hits']:,} secondary-limit hit(s)"
        + (f"; rejected token(s) (fingerprints): {', '.join(rejected)}" if rejected else "")
        + "."
    )


class FetchBatchOperator(BaseOperator):
    """Collect batches of the run's plan into Redis staging, as one of the DAG's fetch slots."""

    template_fields: Sequence[str] = ("slot", "github_conn_id", "redis_conn_id", "postgres_conn_id")
    ui_color = "#e4f0ff"

    def __init__(
        self,
        *,
        slot: int,
        github_conn_id: str = settings.GITHUB_CONN_ID,
        redis_conn_id: str = settings.REDIS_CONN_ID,
        postgres_conn_id: str = settings.POSTGRES_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.slot = slot
        self.github_conn_id = github_conn_id
        self.redis_conn_id = redis_conn_id
        self.postgres_conn_id = postgres_conn_id

    def execute(self, context: Any, event: Any = None) -> dict:
        try:
            return self._execute(context)
        except (StagingLost, ConfigError, NoUsableToken, GraphQLQueryError, ForeignHost) as exc:
            # Retrying cannot bring lost staging back, fix a connection, a query GitHub refuses
            # as invalid, or a redirect off the API host: fail now, saying why.
            raise AirflowFailException(str(exc)) from None
        finally:
            if getattr(self, "_pg_conn", None) is not None:
                self._pg_conn.close()
                self._pg_conn = None

    def _execute(self, context: Any) -> dict:
        ti = context["ti"]
        slot = int(self.slot)
        prefix = settings.key_prefix()
        ns = run_namespace(prefix, ti.dag_id, ti.run_id)
        reservation = f"{ns}slot:{slot}"
        hook = GitHubHook(
            self.github_conn_id, self.redis_conn_id, key_prefix=prefix, reservation_id=reservation
        )
        staging = Staging(hook.redis, ns)
        plan = staging.load_plan()
        if plan is None:
            raise StagingLost(LOST_MESSAGE)
        staging.check_intact()
        n_batches = len(plan["batches"])
        client = hook.get_conn(repos=plan.get("repositories"))
        store = hook.get_quota_store()
        counters = metrics.ClientCounters()

        def report(state: dict, final: bool) -> None:
            counters.flush(client.stats)
            self._report(slot, sink, state, client.fingerprints, store, hook.settings["reserve"], final)

        sink = _StagingSink(staging, report)
        # One collector for the whole slot: users profiled in one batch are not asked for again.
        collector = Collector(client, sink, profile_is_fresh=self._fresh_profiles(plan), wait_inline=False)
        finished: list[int] = []
        while (index := staging.next_batch(slot, n_batches)) is not None:
            batch = plan["batches"][index]
            state, resumed = self._state(staging, plan, index)
            self.log.info(
                "slot %s, batch %s: %d repositories, %s",
                slot,
                index,
                len(batch),
                "resuming from checkpoint" if resumed else "starting",
            )
            sink.start_batch(index)
            for waits in range(MAX_INLINE_WAITS + 1):
                try:
                    collector.run(state)
                    break
                except QuotaExhausted as exc:
                    self._read_ahead(staging, plan, slot, index, collector, sink)
                    sink.start_batch(index)
                    # reset_at already holds GitHub's wait with its +1 s pad (the quota store's).
                    # A short wait costs less here than a task exit, a trigger and a resume.
                    decision = plan_wait(
                        exc.reset_at,
                        time.time(),
                        client.max_inline_wait,
                        hook.settings["resume_lead"],
                        force_defer=waits >= MAX_INLINE_WAITS,
                    )
                    if not decision.defer:
                        time.sleep(decision.seconds + 0.005)
                        continue
                    report(state, True)
                    moment = dt.datetime.fromtimestamp(decision.until, tz=dt.UTC)
                    self.log.warning(
                        "%s; checkpoint stored, deferring until %s (the rest is slept on resuming)",
                        exc,
                        moment.isoformat(),
                    )
                    metrics.incr("deferrals")
                    from airflow.providers.standard.triggers.temporal import DateTimeTrigger

                    self.defer(trigger=DateTimeTrigger(moment=moment), method_name="execute")
            staging.set_outcome(index, "done")
            finished.append(index)
            report(state, True)
        store.release_reservation(reservation)
        counters.flush(client.stats)
        mine = sorted(b for b, s in staging.claims().items() if s == slot)
        context["slot_label"] = slot_label(slot, mine, plan)
        if not mine:
            # Other slots took every batch before this one started: nothing of the run is here.
            raise AirflowSkipException(
                f"slot {slot}: no batch left to claim, every batch is taken by other slots"
            )
        stats = client.stats
        summary = {
            "slot": slot,
            "batches": mine,
            "finished_now": finished,
            "requests": stats.requests,
            "core_spent": stats.core_spent,
            "graphql_spent": stats.graphql_spent,
            "not_modified": stats.not_modified,
            "secondary_hits": stats.secondary_hits,
            # every token the pool holds as rejected, whichever task or worker met the 401
            "rejected_tokens": sorted(fp for fp in client.fingerprints if store.is_rejected(fp)),
        }
        self.log.info("%s", slot_sentence(summary, sink.users))
        return summary

    def _state(self, staging: Staging, plan: dict, index: int) -> tuple[dict, bool]:
        """A batch's checkpoint, or its starting state; and whether it was resumed."""
        state = staging.load_state(index)
        if state is not None:
            return state, True
        previous = {} if plan.get("full_refresh") else self._previous(plan["batches"][index])
        return batch_state(plan, index, previous), False

    def _read_ahead(
        self, staging: Staging, plan: dict, slot: int, current: int, collector: Collector, sink: _StagingSink
    ) -> None:
        """While this batch waits for quota, spend the REST budget it has no work for on the REST
        lists (contributors) of the slot's next batches, claimed now if need be.

        REST and GraphQL are separate budgets, and a batch's REST work is small: left to each
        batch, REST windows would close part unspent whenever GraphQL is dry. Each batch is
        checkpointed as usual, and finished by this slot after the current one.
        """
        client = collector.client
        read: set[int] = {current}
        while not client.quota.ready_at(client.fingerprints, "core"):
            held = [b for b in staging.held(slot) if b not in read]
            if held:
                index: int | None = held[0]
            elif len(staging.held(slot)) <= READ_AHEAD_BATCHES:
                index = staging.claim(slot, len(plan["batches"]))
            else:
                index = None
            if index is None:
                return
            read.add(index)
            state, _ = self._state(staging, plan, index)
            sink.start_batch(index)
            try:
                collector.run(state, only="core")
            except QuotaExhausted:
                return
            self.log.info(
                "slot %s: REST lists of batch %s read ahead while batch %s waits", slot, index, current
            )

    def _report(
        self,
        slot: int,
        sink: _StagingSink,
        state: dict,
        fps: list[str],
        store: Any,
        reserve: int,
        final: bool,
    ) -> None:
        """One progress line: where the batch is, users staged, quota per account, and an ETA."""
        snapshot = store.snapshot(fps)
        accounts = store.accounts(fps)
        metrics.quota_gauges(snapshot, accounts)
        line = progress.progress_line(
            slot=slot,
            batch=sink.batch,
            state=state,
            pages=sink.pages,
            users=sink.users,
            elapsed=sink.clock() - sink.started,
            quota_by_account={account: snapshot.get(group[0]) or {} for account, group in accounts.items()},
            reserve=reserve,
            now=time.time(),
            final=final,
        )
        self.log.info("%s", line)

    def _pg(self):
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        if getattr(self, "_pg_conn", None) is None:
            self._pg_conn = PostgresHook(postgres_conn_id=self.postgres_conn_id).get_conn()
        return self._pg_conn

    def _previous(self, batch: list[str]) -> dict[str, dict]:
        from github_collector.loader import previous_state

        return previous_state(self._pg(), batch)

    def _fresh_profiles(self, plan: dict):
        """Skip profile look-ups for users whose stored profile is recent, unless full_refresh."""
        if plan.get("full_refresh"):
            return None
        from github_collector.loader import fresh_profiles

        max_age = settings.profile_max_age_hours()

        def check(user_ids: list[int]) -> set[int]:
            conn = self._pg()
            try:
                return fresh_profiles(conn, user_ids, max_age)
            except Exception as exc:  # no table yet on a first run: nothing is fresh
                conn.rollback()
                if "does not exist" in str(exc):
                    return set()
                raise

        return check
