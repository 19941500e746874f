"""The quota-bound benchmark's window analysis (bench/quota_bound.py), on request logs built
by hand: which windows count as closed while work remained, and what share of each is spent."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import quota_bound as qb  # bench/ is not a package: on the path above

W = qb.WINDOW_S
LIMITS = {"core": 10 + qb.RESERVE, "graphql": 10 + qb.RESERVE}  # 10 usable units of each


def _log(spends: list[tuple[float, str, int]], account: str = "a") -> list[dict]:
    """One request log entry per (seconds after start, resource, cost)."""
    return [
        {"t": 1000.0 + t, "account": account, "resource": r, "cost": c, "path": "/graphql"}
        for t, r, c in spends
    ]


def _analyse(log: list[dict]) -> dict:
    return qb.analyse(log, {"secondary_limit_hits": 0}, wall=3 * W, limits=LIMITS)


def test_a_window_closed_short_while_work_of_its_resource_was_in_hand_counts_short():
    # window 1 spends 6 of 10 though 10 more units followed: 60% of what it could spend
    log = _log(
        [(i * 0.1, "graphql", 1) for i in range(6)] + [(W + 1 + i * 0.1, "graphql", 1) for i in range(10)]
    )
    out = _analyse(log)
    assert out["graphql_closed_windows"] == 1
    assert out["graphql_spent_min"] == pytest.approx(0.6)
    assert out["graphql_spent_of_usable_min"] == pytest.approx(0.6)


def test_a_window_is_measured_against_the_work_that_was_left_when_less_than_its_budget():
    # window 2 spends 8, and only 1 unit (which waited for the other resource) followed it:
    # it could have spent 9 at most
    log = _log(
        [(i * 0.1, "graphql", 1) for i in range(10)]
        + [(W + 1 + i * 0.1, "graphql", 1) for i in range(8)]
        + [(2 * W + 3, "graphql", 1)]
    )
    out = _analyse(log)
    assert out["graphql_closed_windows"] == 2
    assert out["graphql_spent_min"] == pytest.approx(8 / 9, abs=1e-3)
    assert out["graphql_spent_of_usable_min"] == pytest.approx(0.8)


def test_the_window_still_open_when_the_work_ended_is_not_counted():
    log = _log([(i * 0.1, "core", 1) for i in range(10)] + [(W + 1, "core", 1)])
    out = _analyse(log)
    assert out["core_closed_windows"] == 1
    assert out["core_spent_min"] == pytest.approx(1.0)
    assert out["graphql_closed_windows"] == 0 and out["graphql_spent_min"] is None


# -- runs through Airflow: the run's span and task states from its metadata rows -----------------
def _ti(task: str, index: int, state: str, start: str | None, end: str | None) -> dict:
    return {"task_id": task, "map_index": index, "state": state, "start_date": start, "end_date": end}


TIS = [
    _ti("plan", -1, "success", "2026-01-01 10:00:05.000000", "2026-01-01 10:00:09.000000"),
    _ti("collect.quota_gate", 0, "success", "2026-01-01 10:00:10.000000", "2026-01-01 10:00:11.000000"),
    _ti("collect.fetch", 1, "skipped", "2026-01-01 10:01:00.000000", "2026-01-01 10:01:00.500000"),
    _ti("collect.fetch", 0, "success", "2026-01-01 10:00:11.000000", "2026-01-01 10:00:59.000000"),
    _ti("commit", -1, "success", "2026-01-01 10:01:01.000000", "2026-01-01 10:01:03.000000"),
]


def test_a_dags_test_run_is_timed_from_its_first_task_in_utc():
    # SQLite keeps naive UTC text; the run row's start_date (before the DAG is parsed again) is not used
    run = {"state": "success", "queued_at": None, "start_date": "2026-01-01 10:00:00.000000"}
    start, wall, states = qb.airflow_outcome(run | {"end_date": "2026-01-01 10:01:04.000000"}, TIS, False)
    assert start == dt.datetime(2026, 1, 1, 10, 0, 5, tzinfo=dt.UTC).timestamp()
    assert wall == pytest.approx(59.0)
    assert states == {"commit": "success", "slots": ["skipped", "success"]}


def test_a_dags_test_run_without_task_starts_is_timed_from_the_run_start():
    # Airflow 2.x's dags test leaves task_instance.start_date empty
    tis = [t | {"start_date": None} for t in TIS]
    run = {"state": "success", "queued_at": None, "start_date": "2026-01-01 10:00:00.000000"}
    _start, wall, _states = qb.airflow_outcome(run | {"end_date": "2026-01-01 10:01:04.000000"}, tis, False)
    assert wall == pytest.approx(64.0)


def test_a_triggered_run_is_timed_from_its_queueing_to_its_end():
    utc = dt.UTC
    run = {
        "state": "success",
        "queued_at": dt.datetime(2026, 1, 1, 9, 59, 58, tzinfo=utc),
        "start_date": dt.datetime(2026, 1, 1, 10, 0, 1, tzinfo=utc),
        "end_date": None,  # not written: the last task's end stands in
    }
    _start, wall, _states = qb.airflow_outcome(run, TIS, True)
    assert wall == pytest.approx(65.0)


def test_a_run_whose_plan_failed_reports_the_plan_as_the_commit_does_in_process():
    tis = [_ti("plan", -1, "failed", "2026-01-01 10:00:05", "2026-01-01 10:00:06")]
    run = {"state": "failed", "queued_at": None, "end_date": "2026-01-01 10:00:07"}
    _start, wall, states = qb.airflow_outcome(run, tis, False)
    assert wall == pytest.approx(2.0)
    assert states == {"commit": "failed", "slots": []}


def test_a_failed_run_is_a_goal_not_met_and_a_skipped_one_only_a_note():
    res = {
        "runs": [],
        "not_run": [
            {"label": "1 token", "way": qb.CELERY, "reason": "TimeoutError: ...", "failed": True},
            {"label": "3 tokens", "way": qb.CELERY, "reason": qb.skip_reason(qb.CELERY, 2), "failed": False},
        ],
    }
    assert qb.skip_reason(qb.CELERY, 2) and qb.skip_reason(qb.CELERY, 3) is None
    assert qb.skip_reason(qb.DAGS_TEST, 2) is None
    assert qb.goal_rows(res) == [(f"1 token ({qb.CELERY}): run to the end", "done", "failed", False)]


def test_deferrals_are_counted_from_the_runs_task_logs_not_the_triggerers(tmp_path):
    task = tmp_path / "dag_id=github_repo_users" / "run_id=r1" / "task_id=collect.fetch" / "map_index=0"
    task.mkdir(parents=True)
    (task / "attempt=1.log").write_text("checkpoint stored, deferring until 1\\n...deferring until 2\\n")
    (task / "attempt=1.log.trigger.7.log").write_text("deferring until 3\\n")
    other = tmp_path / "dag_id=github_repo_users" / "run_id=r2" / "task_id=collect.fetch"
    other.mkdir(parents=True)
    (other / "attempt=1.log").write_text("deferring until 4\\n")
    assert qb._deferrals(tmp_path, "r1") == 2
    assert qb._deferrals(tmp_path, "r3") == 0
