"""Run the DAG's real tasks for one DAG run in this process, as a worker and a triggerer would.

The fault tests need to stop, kill and restart things between and inside tasks, which
`airflow dags test` does not allow. ``InProcessRun`` calls the same plan function, sensor,
fetch operator and commit function the DAG wires, with a minimal task-instance context, and
plays the triggerer: a task that defers hands back its trigger, the harness waits until the
trigger's moment (outside the task) and then calls the method the task asked for. Sleeps made
inside a task are recorded, so a test can show that no task waited for a reset in a worker
slot.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

DAG_ID = "github_repo_users"
ALL = ["contributors", "forkers", "stargazers", "watchers"]
_in_task = threading.local()
_real_sleep = time.sleep


def conn_env(
    *,
    github_url: str,
    tokens: list[str],
    pg_db: str,
    prefix: str,
    redis_port: int = 6379,
    redis_db: int = 0,
    pg_user: str = "postgres",
    github_extra: dict | None = None,
) -> dict[str, str]:
    """The three Airflow connections (as AIRFLOW_CONN_* variables) and the Redis key prefix."""
    return {
        "AIRFLOW_CONN_GITHUB_DEFAULT": json.dumps(
            {
                "conn_type": "github_repo_users",
                "host": github_url,
                "password": tokens[0],
                "extra": {"tokens": tokens[1:], "reserve": 0, **(github_extra or {})},
            }
        ),
        "AIRFLOW_CONN_REDIS_DEFAULT": json.dumps(
            {"conn_type": "redis", "host": "127.0.0.1", "port": redis_port, "extra": {"db": redis_db}}
        ),
        "AIRFLOW_CONN_POSTGRES_DEFAULT": json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": pg_user, "schema": pg_db}
        ),
        "GITHUB_REPO_USERS_REDIS_PREFIX": prefix,
    }


def set_connections(monkeypatch, **kwargs) -> None:
    """conn_env(**kwargs), set in the test's environment (undone after the test)."""
    for k, v in conn_env(**kwargs).items():
        monkeypatch.setenv(k, v)


def recording_sleep(seconds: float) -> None:
    """time.sleep that remembers how long tasks slept (patched in by the tests)."""
    log = getattr(_in_task, "sleeps", None)
    if log is not None:
        log.append(seconds)
    _real_sleep(seconds)


@dataclass
class TaskOutcome:
    state: str  # success | skipped | failed
    result: Any = None
    error: BaseException | None = None
    deferrals: list[float] = field(default_factory=list)  # epoch seconds each deferral waited for
    resumed_after_s: list[float] = field(default_factory=list)  # how long after the moment it resumed
    sleeps: list[float] = field(default_factory=list)  # sleeps inside the task (worker time)


def failures(outcomes: dict) -> list[str]:
    """Every task failure of a run() result, for assertion messages."""
    out = [f"{name}: {o.error!r}" for name, o in outcomes.items() if isinstance(o, TaskOutcome) and o.error]
    out += [f"slot {s}: {o.error!r}" for s, o in outcomes.get("slots", {}).items() if o.state == "failed"]
    return out


class InProcessRun:
    def __init__(
        self,
        run_id: str,
        *,
        slots: int = 2,
        max_deferrals: int = 200,
        logical_date: dt.datetime | None = None,
    ) -> None:
        self.run_id = run_id
        self.logical_date = logical_date  # as Airflow passes it (None: a manual run without one)
        self.slots = slots
        self.max_deferrals = max_deferrals

    def _context(self, slot: int | None = None, try_number: int = 1) -> dict:
        ti = SimpleNamespace(
            dag_id=DAG_ID, run_id=self.run_id, map_index=-1 if slot is None else slot, try_number=try_number
        )
        return {"ti": ti}

    def _drive(self, call, resume) -> TaskOutcome:
        """Run a task body; on deferral wait (as the triggerer) and resume, until it ends."""
        from airflow.providers.common.compat.sdk import AirflowSkipException, TaskDeferred

        out = TaskOutcome("success")
        _in_task.sleeps = out.sleeps
        try:
            fn, args = call, ()
            while True:
                try:
                    out.result = fn(*args)
                    return out
                except TaskDeferred as deferred:
                    if len(out.deferrals) >= self.max_deferrals:
                        raise RuntimeError("too many deferrals: the task does not make progress") from None
                    moment = deferred.trigger.moment.timestamp()
                    out.deferrals.append(moment)
                    _in_task.sleeps = None  # the triggerer waits, not the task
                    _real_sleep(max(0.0, moment - time.time()))
                    out.resumed_after_s.append(time.time() - moment)
                    _in_task.sleeps = out.sleeps
                    event = {"status": "success", "moment": deferred.trigger.moment}
                    fn, args = resume(deferred.method_name), (event,)
        except AirflowSkipException as exc:
            out.state, out.error = "skipped", exc
        except BaseException as exc:  # a task failure, as Airflow would record it
            out.state, out.error = "failed", exc
        finally:
            _in_task.sleeps = None
        return out

    # -- the DAG's tasks --------------------------------------------------------------------------
    def plan(self, conf: dict) -> TaskOutcome:
        from github_collector.run_tasks import plan_run

        params = {"relations": ALL, "batch_size": 5, "full_refresh": False, **conf}
        return self._drive(
            lambda: plan_run(params, DAG_ID, self.run_id, logical_date=self.logical_date), None
        )

    def gate(self, slot: int, try_number: int = 1) -> TaskOutcome:
        from github_collector.sensors import RateLimitSensor

        sensor = RateLimitSensor(task_id=f"quota_gate_{slot}", slot=slot)
        ctx = self._context(slot, try_number)
        return self._drive(
            lambda: sensor.execute(ctx), lambda name: lambda event: getattr(sensor, name)(ctx, event)
        )

    def fetch(self, slot: int, try_number: int = 1) -> TaskOutcome:
        from github_collector.operators import FetchBatchOperator

        op = FetchBatchOperator(task_id=f"fetch_{slot}", slot=slot)
        ctx = self._context(slot, try_number)
        return self._drive(lambda: op.execute(ctx), lambda name: lambda event: getattr(op, name)(ctx, event))

    def commit(self) -> TaskOutcome:
        from github_collector.run_tasks import commit_run

        when = self.logical_date or dt.datetime.now(dt.UTC)
        return self._drive(lambda: commit_run(DAG_ID, self.run_id, when), None)

    def collect(self, slot: int, try_number: int = 1) -> TaskOutcome:
        """The mapped task group for one slot: the quota gate, then the fetch."""
        gate = self.gate(slot, try_number)
        if gate.state != "success":
            return gate
        fetch = self.fetch(slot, try_number)
        fetch.deferrals[:0] = gate.deferrals
        fetch.sleeps[:0] = gate.sleeps
        return fetch

    def run(self, conf: dict, *, concurrent: bool = True, retries: int = 0) -> dict[str, Any]:
        """plan >> collect (every slot, in threads when concurrent) >> commit, like the DAG."""
        outcomes: dict[str, Any] = {"plan": self.plan(conf)}
        if outcomes["plan"].state != "success":
            return outcomes
        slots: dict[int, TaskOutcome] = {}

        def one(slot: int) -> None:
            for attempt in range(1, retries + 2):
                slots[slot] = self.collect(slot, attempt)
                if slots[slot].state != "failed":
                    return

        if concurrent:
            threads = [threading.Thread(target=one, args=(s,)) for s in range(self.slots)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            for s in range(self.slots):
                one(s)
        outcomes["slots"] = slots
        outcomes["commit"] = self.commit()  # trigger rule all_done: runs whatever the slots did
        return outcomes
