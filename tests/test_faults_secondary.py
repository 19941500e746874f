"""Secondary rate limits under high concurrency.

The emulator enforces GitHub's secondary limits (900 REST and 2,000 GraphQL points per
minute and token, 100 concurrent requests) over a window shortened to two seconds, with the
per-window budgets scaled to match, so a short run meets them as a long one would. With the
product's default pacing (80% of those rates, over the same window) a run of many slots
at once must never hit them. With pacing off it does hit them, and must then follow
GitHub's procedure (wait out retry-after on that token) and still complete.
"""

from __future__ import annotations

import pytest
from e2e_harness import duplicate_count, read_back
from fault_harness import ALL, InProcessRun, conn_env
from support import diff_against_truth

from github_collector.quota import SECONDARY_PER_MINUTE
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
TOKENS = ["secondary-fault-token-a-0d9e3f"]  # one token: six slots share it
# Two seconds, not less: at GitHub's 60 s a request or two still in flight across the window's
# edge is nothing against the 20% the pacing leaves free, but the scaled budgets are whole
# numbers, and at half a second the REST pace (2 per window) equalled the limit (2), so one
# late request met it.
WINDOW = 2.0
# The emulator's limits at a third of GitHub's, so the unpaced control meets them on every
# run, however slow the machine; the product is paced at its default share (80%) of them.
SHARE = 1 / 3
LIMITS = {r: int(n * WINDOW / 60 * SHARE) for r, n in SECONDARY_PER_MINUTE.items()}
PACE = {
    "rest_per_minute": int(SECONDARY_PER_MINUTE["core"] * SHARE * 0.8),
    "graphql_per_minute": int(SECONDARY_PER_MINUTE["graphql"] * SHARE * 0.8),
}


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(DatasetSpec(seed=47, n_repos=30, n_users=20_000, max_per_repo=3000))


def test_the_scaled_pace_leaves_room_under_the_scaled_limits():
    # More than one request's room per window for each resource, or the paced run proves nothing.
    for r, limit in LIMITS.items():
        paced = int(PACE[f"{'rest' if r == 'core' else r}_per_minute"] * WINDOW / 60)
        assert limit - paced >= 2, (r, limit, paced)


def _emulator(dataset) -> EmulatorServer:
    cfg = EmulatorConfig(
        tokens=[TokenConfig(name=f"t{i}", token=t, collaborator_repos=("*",)) for i, t in enumerate(TOKENS)],
        secondary_window_seconds=WINDOW,
        secondary_rest_points_per_minute=LIMITS["core"],
        secondary_graphql_points_per_minute=LIMITS["graphql"],
        # This scenario is about the points per minute; the GraphQL CPU budget, scaled to a
        # half-second window, would refuse one large query whatever the pacing
        # (tests/test_client_limits.py covers that budget).
        graphql_cpu_seconds_per_minute=None,
    )
    return EmulatorServer(dataset, cfg).start()


def _run(dataset, monkeypatch, fresh_db, key_prefix, srv, run_id: str, **extra) -> dict:
    env = conn_env(
        github_url=srv.url,
        tokens=TOKENS,
        pg_db=fresh_db[0],
        prefix=f"{key_prefix}{run_id}:",
        # The product's rates are per minute, counted over pace_window seconds.
        github_extra={"pace_window": WINDOW, **extra},
    )
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # full_refresh and a prefix per run: the second run meets the same load, not an incremental one
    return InProcessRun(run_id, slots=6).run(
        {"repositories": dataset.repo_names(), "batch_size": 3, "full_refresh": True}
    )


def _check(dataset, fresh_db, out) -> None:
    assert out["commit"].state == "success", repr(out["commit"].error)
    truth = dataset.truth(ALL, collaborator_repos=["*"])
    assert diff_against_truth(truth, *read_back(fresh_db[1])) == []
    assert duplicate_count(fresh_db[1]) == 0


def test_pacing_keeps_off_the_secondary_limits_that_the_same_load_meets_without_it(
    dataset, monkeypatch, fresh_db, key_prefix, figure
):
    # 1. Pacing off: the load meets the limits, and GitHub's procedure is followed.
    srv = _emulator(dataset)
    try:
        out = _run(
            dataset,
            monkeypatch,
            fresh_db,
            key_prefix,
            srv,
            "unpaced",
            rest_per_minute=0,
            graphql_per_minute=0,
        )
        _check(dataset, fresh_db, out)
        log = srv.request_log()
        stats_unpaced = srv.stats()
    finally:
        srv.stop()
    hits = [i for i, e in enumerate(log) if e.get("limit") == "secondary"]
    assert hits, "the load never met a secondary limit: the scenario proves nothing"
    unpaced_hits = stats_unpaced["secondary_limit_hits"]
    gaps = []
    for i in hits:  # after a secondary-limit answer, that token waits before its next request
        nxt = next((e for e in log[i + 1 :] if e["token"] == log[i]["token"]), None)
        if nxt is not None:
            gaps.append(nxt["t"] - log[i]["t"])
    assert gaps and min(gaps) >= 0.9, sorted(gaps)[:5]  # retry-after is at least 1 s here
    figure(
        "secondary limits, pacing off",
        requests=len(log),
        secondary_hits_per_1000=round(1000 * len(hits) / len(log), 1),
        shortest_wait_after_hit_s=round(min(gaps), 2),
        completed="exact",
    )

    # 2. Default pacing, the same load on a fresh emulator: no hit at all.
    srv = _emulator(dataset)
    try:
        out = _run(dataset, monkeypatch, fresh_db, key_prefix, srv, "paced", **PACE)
        _check(dataset, fresh_db, out)
        stats = srv.stats()
    finally:
        srv.stop()
    assert stats["secondary_limit_hits"] == 0
    assert stats["requests"] >= 0.9 * (len(log) - len(hits))  # the same work as the control
    assert len(hits) == unpaced_hits  # the control counted secondary hits only
    figure(
        "secondary limits, default pacing",
        slots=6,
        tokens=len(TOKENS),
        requests=stats["requests"],
        secondary_hits_per_1000=round(1000 * stats["secondary_limit_hits"] / stats["requests"], 2),
        completed="exact",
    )
