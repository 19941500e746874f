"""The mapped fetch task: one slot collecting the run's batches into Redis, resumable at any page.

A slot claims batches one at a time (``Staging.next_batch``) and collects each with a
checkpoint after every step. On quota exhaustion the checkpoint is already stored, so the
task defers itself to the triggerer until the earliest reset and resumes from it: no worker
slot is held while waiting, and no staged page is fetched again. A retried slot first
finishes the batch it had claimed.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from github_collector import settings
from github_collector.collector import Collector, Step, new_batch_state
from github_collector.errors import ConfigError, NoUsableToken, QuotaExhausted
from github_collector.hook import GitHubHook
from github_collector.staging import LOST_MESSAGE, Staging, StagingLost, run_namespace


class _StagingSink:
    def __init__(self, staging: Staging, crash_after: int | None) -> None:
        self.staging = staging
        self.batch = -1
        self.crash_after = crash_after
        self.steps = 0

    def write(self, step: Step) -> None:
        self.staging.write_step(self.batch, step)
        self.steps += 1
        if self.crash_after is not None and self.steps >= self.crash_after:
            # Fault injection for the crash tests: die like a killed worker, after a stored step.
            os._exit(137)


def slot_label(slot: int, batches: list[int], plan: dict) -> str:
    """What the Airflow UI shows for a mapped slot (map_index_template)."""
    if not batches:
        return f"slot {slot}: no batch left"
    repos = sum(len(plan["batches"][i]) for i in batches)
    first = plan["batches"][batches[0]][0]
    return f"slot {slot}: {first} … ({len(batches)} batch(es), {repos} repos)"


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
        except (StagingLost, ConfigError, NoUsableToken) as exc:
            # Retrying cannot bring lost staging back or fix a connection: fail now, saying why.
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
        crash_after = os.environ.get("GITHUB_REPO_USERS_CRASH_AFTER_STEPS")
        sink = _StagingSink(staging, int(crash_after) if crash_after and ti.try_number <= 1 else None)
        client = hook.get_conn()
        # One collector for the whole slot: users profiled in one batch are not asked for again.
        collector = Collector(client, sink, profile_is_fresh=self._fresh_profiles(plan))
        finished: list[int] = []
        while (index := staging.next_batch(slot, n_batches)) is not None:
            batch = plan["batches"][index]
            state = staging.load_state(index)
            resumed = state is not None
            if state is None:
                previous = {} if plan.get("full_refresh") else self._previous(batch)
                state = new_batch_state(batch, plan["relations"], previous, plan.get("full_refresh", False))
            self.log.info(
                "slot %s, batch %s: %d repositories, %s",
                slot,
                index,
                len(batch),
                "resuming from checkpoint" if resumed else "starting",
            )
            sink.batch = index
            try:
                collector.run(state)
            except QuotaExhausted as exc:
                moment = dt.datetime.fromtimestamp(exc.reset_at + 1, tz=dt.UTC)
                self.log.warning("%s; checkpoint stored, deferring until %s", exc, moment.isoformat())
                from airflow.providers.standard.triggers.temporal import DateTimeTrigger

                self.defer(trigger=DateTimeTrigger(moment=moment), method_name="execute")
            staging.set_outcome(index, "done")
            finished.append(index)
        store = hook.get_quota_store()
        store.release_reservation(reservation)
        mine = sorted(b for b, s in staging.claims().items() if s == slot)
        context["slot_label"] = slot_label(slot, mine, plan)
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
        self.log.info("slot %s done: %s", slot, summary)
        return summary

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
