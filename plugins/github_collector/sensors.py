"""RateLimitSensor: start a fetch slot as soon as the token pool can pay for its next request.

It runs per slot (inside the mapped task group) rather than once before the fan-out, so a
slot waiting for a reset does not hold back slots that can go. It holds nothing: a batch's
whole budget is unknown before its lists are read, and holding an estimate left quota idle
(a slot whose estimate outgrew what was left waited for the reset with units in hand).
Slots share the quota request by request instead: every request leases a token above its
reserve, one request at a time per account, so concurrent slots cannot overdraw it, and the
fetch defers by itself when every token runs dry.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException, BaseSensorOperator

try:  # Airflow 3 (airflow.exceptions re-exports it with a deprecation warning)
    from airflow.sdk.exceptions import AirflowSensorTimeout
except ImportError:  # Airflow 2.11
    from airflow.exceptions import AirflowSensorTimeout

from github_collector import settings
from github_collector.hook import GitHubHook
from github_collector.queries import GRAPHQL_RELATIONS
from github_collector.quota import RESOURCES
from github_collector.staging import LOST_MESSAGE, Staging, run_namespace
from github_collector.waiting import plan_wait

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


class RateLimitSensor(BaseSensorOperator):
    """Wait, without holding a worker slot, until some token can pay a slot's next request.

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
        self._resume_lead = 0.0

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
        client = hook.get_conn(repos=plan.get("repositories"))
        self._max_inline_wait = hook.settings["max_inline_wait"]
        self._resume_lead = hook.settings["resume_lead"]
        client.ensure_quota_records(refresh_stale=True)  # free: GET /rate_limit
        store = hook.get_quota_store()
        need = estimate_cost(plan["batches"][index], self.relations or plan["relations"])
        # A batch not started yet first learns its repositories (GraphQL); one under way can go
        # on with whichever budget has work and units left (REST contributors, GraphQL pages).
        started = staging.load_state(index) is not None
        wanted = [r for r in RESOURCES if need[r]] if started else ["graphql"]
        now = time.time()
        waits: list[float] = []
        for resource in wanted:
            ready = store.ready_at(client.fingerprints, resource, now=now)
            self.log.info(
                "quota %s for batch %s: %s",
                resource,
                index,
                "next request payable now" if not ready else f"no account can pay before {ready:.0f}",
            )
            if not ready:
                return True
            waits.append(ready)
        self._next_check = min(waits) if waits else now
        return False

    def execute(self, context: Any) -> None:
        if not self.deferrable:
            return super().execute(context)
        self._wait_or_defer(context, time.time())
        return None

    def _timeout_s(self) -> float:
        t = self.timeout
        return t.total_seconds() if isinstance(t, dt.timedelta) else float(t)

    def _wait_or_defer(self, context: Any, started: float) -> None:
        """Sleep through a wait no longer than the connection's ``max_inline_wait``; defer a longer one.

        A short wait costs less in the task than a task exit, a trigger and a resume; and
        Airflow 3.3 may mark a task that resumes within seconds of deferring for retry
        (apache/airflow#71580). Long waits never hold a worker slot. ``started`` is when the
        gate first looked: its ``timeout`` counts from there, across its own deferrals.
        """
        for _ in range(MAX_INLINE_WAITS):
            if self.poke(context):
                return
            decision = plan_wait(self._next_check or 0, time.time(), self._max_inline_wait, self._resume_lead)
            if decision.defer:
                break
            self.log.info("quota short for %.0f s: waiting here rather than deferring", decision.seconds)
            time.sleep(decision.seconds)
        if time.time() - started >= self._timeout_s():
            msg = f"no token could pay this slot's next request within the gate's timeout ({self._timeout_s():.0f} s)"
            if self.soft_fail:
                raise AirflowSkipException(msg)
            raise AirflowSensorTimeout(msg)
        self._defer(started)

    def _defer(self, started: float) -> None:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        # _next_check already holds the store's pad (reset + 1 s: GitHub's reset is a whole
        # second). The deferral ends resume_lead s before it (waiting.py); a wait past the
        # timeout's end resumes at that end, to time out then.
        now = time.time()
        decision = plan_wait(
            self._next_check or now, now, self._max_inline_wait, self._resume_lead, force_defer=True
        )
        until = min(decision.until, started + self._timeout_s())
        moment = dt.datetime.fromtimestamp(until, tz=dt.UTC)
        self.log.info("no token can pay this slot's next request; deferring until %s", moment.isoformat())
        self.defer(
            trigger=DateTimeTrigger(moment=moment),
            method_name="execute_complete",
            kwargs={"started": started},
        )

    def execute_complete(self, context: Any, event: Any = None, started: float | None = None) -> None:
        # Airflow hands back the deferral's kwargs: the clock goes on from the first look.
        self._wait_or_defer(context, time.time() if started is None else float(started))
