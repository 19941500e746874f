"""RateLimitSensor: start a fetch slot only when the token pool can pay for its next batch.

It runs per slot (inside the mapped task group) rather than once before the fan-out: each
slot then holds its own reservation, so slots that start together cannot all count the
same remaining units, and a slot waiting for a reset does not hold back slots that fit.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException, BaseSensorOperator

from github_collector import settings
from github_collector.hook import GitHubHook
from github_collector.queries import GRAPHQL_RELATIONS
from github_collector.quota import RESOURCES
from github_collector.staging import LOST_MESSAGE, Staging, run_namespace

CONNECTIONS_PER_QUERY = 10
MAX_INLINE_WAITS = 5  # short waits slept through in a row before deferring anyway


def estimate_cost(batch: Sequence[str], relations: Sequence[str]) -> dict[str, int]:
    """Units the batch's first pass needs: one contributors page per repo, packed GraphQL pages.

    Exact costs depend on list sizes nobody knows before listing; this is what the batch must
    be able to spend to make progress. The fetch checkpoints and defers if it needs more.
    """
    n = len(batch)
    gql_rels = sum(1 for r in relations if r in GRAPHQL_RELATIONS)
    core = n if "contributors" in relations else 0
    graphql = math.ceil(n * max(gql_rels, 1) / CONNECTIONS_PER_QUERY) + (1 if core else 0)
    return {"core": core, "graphql": graphql}


def reservation_id(context: Any, slot: int) -> str:
    ti = context["ti"]
    ns = run_namespace(settings.key_prefix(), ti.dag_id, ti.run_id)
    return f"{ns}slot:{slot}"


class RateLimitSensor(BaseSensorOperator):
    """Wait, without holding a worker slot, until the quota covers a slot's next batch; then reserve it.

    A slot with no batch left to take (more slots than batches) is skipped, and so is its fetch.
    """

    template_fields: Sequence[str] = ("slot", "relations", "github_conn_id", "redis_conn_id")
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        slot: int,
        relations: Sequence[str] | None = None,
        github_conn_id: str = settings.GITHUB_CONN_ID,
        redis_conn_id: str = settings.REDIS_CONN_ID,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        if not deferrable:
            kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 60)
        super().__init__(**kwargs)
        self.slot = slot
        self.relations = relations
        self.github_conn_id = github_conn_id
        self.redis_conn_id = redis_conn_id
        self.deferrable = deferrable
        self._next_check: float | None = None
        self._max_inline_wait = 0.0

    def poke(self, context: Any) -> bool:
        hook = GitHubHook(self.github_conn_id, self.redis_conn_id, key_prefix=settings.key_prefix())
        ti = context["ti"]
        staging = Staging(hook.redis, run_namespace(settings.key_prefix(), ti.dag_id, ti.run_id))
        plan = staging.load_plan()
        if plan is None:
            raise AirflowFailException(LOST_MESSAGE)
        index = staging.peek_batch(int(self.slot), len(plan["batches"]))
        if index is None:
            raise AirflowSkipException(f"slot {self.slot}: every batch is taken by other slots")
        client = hook.get_conn()
        self._max_inline_wait = hook.settings["max_inline_wait"]
        client.ensure_quota_records(refresh_stale=True)  # free: GET /rate_limit
        store = hook.get_quota_store()
        need = estimate_cost(plan["batches"][index], self.relations or plan["relations"])
        rid = reservation_id(context, int(self.slot))
        waits: list[float] = []
        for resource in RESOURCES:
            if not need[resource]:
                continue
            res = store.reserve_budget(client.fingerprints, resource, need[resource], rid)
            self.log.info(
                "quota %s for batch %s: need %s, available above reserves %s, held by other slots %s -> %s",
                resource,
                index,
                need[resource],
                res.available,
                res.held,
                "reserved" if res.granted else "wait",
            )
            if not res.granted:
                waits.append(res.earliest_reset or (dt.datetime.now(dt.UTC).timestamp() + 60))
        if waits:
            store.release_reservation(rid)
            self._next_check = max(waits)
            return False
        return True

    def execute(self, context: Any) -> None:
        if not self.deferrable:
            return super().execute(context)
        self._wait_or_defer(context)
        return None

    def _wait_or_defer(self, context: Any) -> None:
        """Sleep through a wait no longer than the connection's ``max_inline_wait``; defer a longer one.

        A short wait costs less in the task than a task exit, a trigger and a resume; and
        Airflow 3.3 may mark a task that resumes within seconds of deferring for retry
        (apache/airflow#71580). Long waits never hold a worker slot.
        """
        for _ in range(MAX_INLINE_WAITS):
            if self.poke(context):
                return
            wait = (self._next_check or 0) + 1 - time.time()
            if wait > self._max_inline_wait:
                break
            self.log.info("quota short for %.0f s: waiting here rather than deferring", max(wait, 0))
            time.sleep(max(wait, 0))
        self._defer()

    def _defer(self) -> None:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        # +1 s: GitHub's reset is a whole second; resume within seconds of it, not before.
        moment = dt.datetime.fromtimestamp((self._next_check or 0) + 1, tz=dt.UTC)
        self.log.info("quota short for this slot's next batch; deferring until %s", moment.isoformat())
        self.defer(trigger=DateTimeTrigger(moment=moment), method_name="execute_complete")

    def execute_complete(self, context: Any, event: Any = None) -> None:
        self._wait_or_defer(context)
