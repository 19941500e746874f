"""The quota-bound benchmark's window analysis (bench/quota_bound.py), on request logs built
by hand: which windows count as closed while work remained, and what share of each is spent."""

from __future__ import annotations

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
