"""The fetch slot's log while it works: a progress line (where, users staged, quota per account,
an ETA that waits for resets), not more often than every few seconds, and a closing sentence."""

from __future__ import annotations

import itertools
import re

import pytest

from github_collector import progress
from github_collector.collector import Step, new_batch_state
from github_collector.operators import PROGRESS_EVERY_S, _StagingSink, slot_sentence
from github_collector.progress import WINDOW_S, AccountQuota, account_quota, eta_seconds, progress_line
from github_collector.quota import QuotaState
from github_collector.staging import Staging, run_namespace

PLENTY = {"core": [AccountQuota(5000, 1800, 5000)], "graphql": [AccountQuota(5000, 1800, 5000)]}


# -- ETA ------------------------------------------------------------------------------------------
def test_eta_with_enough_quota_is_the_pages_left_at_the_rate_seen():
    # 10 pages in 20 s: 2 s a page; 5 REST + 20 GraphQL pages left
    assert eta_seconds({"core": 5, "graphql": 20}, 10, 20.0, PLENTY) == pytest.approx(50.0)


def test_eta_waits_for_the_reset_when_the_quota_runs_dry_before_the_work_ends():
    quotas = {"core": [AccountQuota(2, 600.0, 5000)], "graphql": PLENTY["graphql"]}
    eta = eta_seconds({"core": 5, "graphql": 0}, 10, 10.0, quotas)
    # 2 pages now, then nothing until the reset in 600 s; the 3 others after it
    assert eta >= 600.0
    assert eta == pytest.approx(600.0 + 3)


def test_a_reset_that_comes_before_the_quota_runs_dry_costs_no_wait():
    # 100 units left for 150 pages at 1 s a page: the reset in 5 s refills long before they run out
    quotas = {"core": [AccountQuota(100, 5.0, 5000)]}
    assert eta_seconds({"core": 150, "graphql": 0}, 1, 1.0, quotas) == pytest.approx(150.0)


def test_work_beyond_one_window_waits_for_every_reset_it_needs():
    # 12,000 REST pages, 100 units now, 5,000 an hour from the reset in 60 s: the last pages are
    # paid by the refill two windows after that reset.
    quotas = {"core": [AccountQuota(100, 60.0, 5000)]}
    eta = eta_seconds({"core": 12_000, "graphql": 0}, 1000, 10.0, quotas)  # 0.01 s a page
    assert eta == pytest.approx(60 + 2 * WINDOW_S + 1_900 * 0.01)


def test_an_accounts_refill_too_small_for_the_work_waits_for_the_next_accounts_reset():
    # The account resetting first refills 100; the 200 still lacking wait for the other's reset.
    quotas = {"core": [AccountQuota(0, 10.0, 100), AccountQuota(0, 1000.0, 5000)]}
    eta = eta_seconds({"core": 300, "graphql": 0}, 10, 10.0, quotas)
    assert eta == pytest.approx(1000.0 + 200)


def test_graphql_pages_cost_one_point_per_packed_query():
    left = {"core": 0, "graphql": 25}  # 3 queries of up to 10 pages
    enough = {"graphql": [AccountQuota(3, 900.0, 5000)]}
    short = {"graphql": [AccountQuota(2, 900.0, 5000)]}
    assert eta_seconds(left, 5, 5.0, enough) == pytest.approx(25.0)
    assert eta_seconds(left, 5, 5.0, short) == pytest.approx(900.0 + 5)  # the last query's 5 pages


def test_a_window_whose_reset_passed_is_full_now_and_resets_again_within_the_hour():
    now = 1_000_000.0
    passed = account_quota(QuotaState(limit=5000, remaining=0, used=5000, reset=int(now) - 30), 100, now)
    assert passed == AccountQuota(available=4900, reset_in=WINDOW_S, capacity=4900)
    running = account_quota(QuotaState(limit=5000, remaining=40, used=4960, reset=int(now) + 300), 100, now)
    assert running == AccountQuota(available=0, reset_in=300.0, capacity=4900)
    # a refill already counted as available is not counted again "at the reset"
    eta = eta_seconds({"core": 6000, "graphql": 0}, 100, 1.0, {"core": [passed]})
    assert eta >= WINDOW_S


def test_no_eta_before_a_page_nor_when_the_reserve_eats_every_limit():
    assert eta_seconds({"core": 5, "graphql": 0}, 0, 3.0, PLENTY) is None
    assert eta_seconds({"core": 5, "graphql": 0}, 2, 3.0, {"core": [AccountQuota(0, 60.0, 0)]}) is None
    assert progress.duration(None) == "unknown yet"
    assert [progress.duration(s) for s in (3.2, 125, 7384)] == ["3 s", "2 min 05 s", "2 h 03 min"]


# -- the line -------------------------------------------------------------------------------------
def _state() -> dict:
    """ml-218/open-server read halfway: contributors 2 pages in, stargazers (250) 1 page in,
    forkers done, watchers not started."""
    state = new_batch_state(["ml-218/open-server"], ["contributors", "forkers", "stargazers", "watchers"])
    repo = state["repos"]["ml-218/open-server"]
    repo.update(full_name="ml-218/open-server", counts={"stargazers": 250, "forks": 40, "watchers": 30})
    repo["streams"]["contributors"]["pages"] = 2
    repo["streams"]["stargazers"]["pages"] = 1
    repo["streams"]["forkers"].update(done=True, status="ok")
    return state


def test_the_line_names_the_list_users_staged_quota_per_account_and_the_eta():
    now = 2_000_000.0
    reset = int(now) + 1800
    line = progress_line(
        slot=3,
        batch=4,
        state=_state(),
        pages=20,
        users=1496,
        elapsed=10.0,
        quota_by_account={
            "id3007488": {
                "core": QuotaState(5000, 4990, 10, reset),
                "graphql": QuotaState(5000, 4960, 40, reset),
            },
            "id42": {"core": QuotaState(5000, 12, 4988, reset), "graphql": None},
            "id77": {},
        },
        reserve=5,
        now=now,
        final=False,
    )
    assert line.startswith("slot 3, batch 4: reading ml-218/open-server contributors; ")
    assert "20 page(s) read in this batch" in line
    assert "1,496 user record(s) staged by this slot" in line
    assert "quota left (id3007488: core 4,990, graphql 4,960; id42: core 12; id77: not known yet)" in line
    # contributors: one more page (no count); stargazers 3 - 1 = 2; watchers 1
    assert "about 4 page(s) left (1 REST, 3 GraphQL)" in line
    assert line.endswith("ETA 2 s")  # 0.5 s a page
    assert "{" not in line and "QuotaState" not in line


def test_the_line_waits_for_the_reset_when_the_quota_left_cannot_pay():
    now = 2_000_000.0
    line = progress_line(
        slot=0,
        batch=1,
        state=_state(),
        pages=20,
        users=0,
        elapsed=20.0,
        quota_by_account={"id1": {"core": QuotaState(5000, 5, 4995, int(now) + 1200)}},
        reserve=5,  # nothing above the reserve: the REST page waits for the reset
        now=now,
        final=False,
    )
    assert line.endswith("ETA 20 min 01 s"), line  # the reset, then the REST page (1 s a page)


def test_the_last_line_of_a_finished_batch_says_so():
    state = _state()
    for stream in state["repos"]["ml-218/open-server"]["streams"].values():
        stream.update(done=True, status="ok")
    line = progress_line(
        slot=1,
        batch=2,
        state=state,
        pages=7,
        users=12,
        elapsed=3.0,
        quota_by_account={},
        reserve=0,
        now=0.0,
        final=True,
    )
    assert "batch done" in line and "quota left (no record)" in line and line.endswith("ETA done")


# -- how often --------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.integration
def test_a_line_at_most_every_few_seconds_and_after_every_slow_page(redis_client, key_prefix):
    staging = Staging(redis_client, run_namespace(key_prefix, "dag", "run"))
    staging.save_plan({"batches": [["a/b"]], "relations": ["contributors"]})
    clock, lines = Clock(), []
    sink = _StagingSink(staging, lambda state, final: lines.append(clock()), clock=clock)
    sink.start_batch(0)
    assert 2.0 <= PROGRESS_EVERY_S <= 10.0  # "every few seconds"
    # 300 fast pages, 0.1 s apart (30 s): a line every PROGRESS_EVERY_S, not one a page
    for i in range(300):
        clock.t += 0.1
        sink.write(Step(state={"i": i}, users=[{"user_id": i, "login": f"u{i}"}], pages=1))
    assert len(lines) == pytest.approx(30 / PROGRESS_EVERY_S, abs=1)
    assert all(b - a >= PROGRESS_EVERY_S - 1e-9 for a, b in itertools.pairwise(lines))
    # slow pages (each longer than the interval): a line after every one
    before = len(lines)
    for i in range(5):
        clock.t += PROGRESS_EVERY_S + 1
        sink.write(Step(state={"slow": i}, pages=1))
    assert len(lines) - before == 5
    assert sink.pages == 305 and sink.users == 300


# -- the slot's closing sentence ------------------------------------------------------------------
def test_the_slot_summary_is_a_sentence():
    summary = {
        "slot": 3,
        "batches": [4, 7],
        "finished_now": [7],
        "requests": 1234,
        "core_spent": 1100,
        "graphql_spent": 96,
        "not_modified": 12,
        "secondary_hits": 0,
        "rejected_tokens": ["fp-ab12"],
    }
    text = slot_sentence(summary, 15_230)
    assert text == (
        "Slot 3 done: 2 batch(es) (4, 7), 1 finished in this attempt; 15,230 user record(s) staged; "
        "1,234 request(s) to GitHub spending 1,100 REST unit(s) and 96 GraphQL point(s); 12 list(s) "
        "unchanged (304, free); 0 secondary-limit hit(s); rejected token(s) (fingerprints): fp-ab12."
    )
    bare = slot_sentence(summary | {"rejected_tokens": [], "batches": []}, 0)
    assert re.fullmatch(r"Slot 3 done: 0 batch\(es\) \(none\), [^{}\[\]'\"]*\.", bare), bare
    assert "rejected" not in bare
