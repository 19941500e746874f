"""Which repositories a day's run re-lists in full: each one once per period, spread over the
days, a missed day caught up by the next run, and a re-listing that ignores stored counts."""

from __future__ import annotations

from collections import Counter

import pytest

from github_collector.collector import Collector, new_batch_state, relist_due, relist_phase, repo_record

pytestmark = pytest.mark.unit
EVERY = 7
DAY0 = 740_000


def listed_on(day: int | None, status: str = "ok") -> dict:
    return {
        rel: {"status": status, "count": 5, "hwm": None, "tried": [], "listed": day} for rel in ("watchers",)
    }


def test_each_repository_is_due_once_per_period_and_the_days_share_them():
    ids = range(600_000_000, 600_000_700)
    per_day = Counter()
    for rid in ids:
        days = [d for d in range(DAY0, DAY0 + EVERY) if relist_due(rid, listed_on(None), d, EVERY)]
        assert len(days) == 1, (rid, days)
        per_day[days[0]] += 1
    # 700 repositories over 7 days: no day pays for all, each about a seventh
    assert len(per_day) == EVERY and max(per_day.values()) < 2 * 700 / EVERY


def test_a_missed_day_is_caught_up_and_hidden_lists_do_not_make_it_due_every_day():
    rid = 600_000_123
    phase_day = next(d for d in range(DAY0, DAY0 + EVERY) if (d - relist_phase(rid, EVERY)) % EVERY == 0)
    before = phase_day - EVERY  # listed in full on its previous day
    assert not relist_due(rid, listed_on(before), phase_day - 1, EVERY)
    # no run on its day: the next run re-lists it, then it waits for its day again
    assert relist_due(rid, listed_on(before), phase_day + 1, EVERY)
    assert not relist_due(rid, listed_on(phase_day + 1), phase_day + 2, EVERY)
    # a list hidden from every token is never listed in full: it does not count as missed
    assert not relist_due(rid, listed_on(before, status="restricted"), phase_day + 1, EVERY)
    assert not relist_due(rid, listed_on(before), phase_day, 0)  # 0 turns it off
    assert not relist_due(None, {}, phase_day, EVERY)  # never stored: listed in full anyway


def test_a_relisted_repository_trusts_no_stored_watcher_count_and_a_newer_star_lists_stars_in_full():
    stored = {
        "o/r": {
            "status": "ok",
            "repo_id": 7,
            "relation_state": {
                "stargazers": {"status": "ok", "count": 10, "hwm": "2026-01-01T00:00:00Z", "listed": 1},
                "watchers": {"status": "ok", "count": 4, "hwm": None, "listed": 1},
            },
        }
    }
    node = {
        "databaseId": 7,
        "nameWithOwner": "o/r",
        "stargazerCount": 10,
        "forkCount": 9,
        "directForks": {"totalCount": 0},
        "isEmpty": False,
        "watcherTotal": {"totalCount": 4},
        "newestStar": {"edges": [{"starredAt": "2026-01-01T00:00:00Z"}]},
    }
    client = type(
        "C",
        (),
        {
            "fingerprints": ["t"],
            "integration_fps": frozenset(),
            "stats": type("S", (), {"core_spent": 0, "graphql_spent": 0})(),
        },
    )()
    for relist, newest, watchers, stars in (
        (False, "2026-01-01T00:00:00Z", "unchanged", "unchanged"),
        (True, "2026-01-01T00:00:00Z", None, "unchanged"),  # the schedule re-lists watchers only
        (False, "2026-02-01T00:00:00Z", "unchanged", None),  # a newer star, the same count: a swap
    ):
        state = new_batch_state(
            ["o/r"], ["forkers", "stargazers", "watchers"], stored, day=9, relist=["o/r"] if relist else []
        )
        repo = state["repos"]["o/r"]
        Collector(client, sink=None)._apply_summary(
            repo, node | {"newestStar": {"edges": [{"starredAt": newest}]}}
        )
        assert repo["streams"]["watchers"]["status"] == watchers
        st = repo["streams"]["stargazers"]
        # a swap is read in full from the oldest: no stored mark
        assert (st["status"], st["stop_at"]) == (stars, None)
        # no direct fork, though the network has 9: an empty list, not a hidden one
        assert repo["streams"]["forkers"]["status"] == "empty"
        assert repo["counts"]["forks"] == 0 and repo_record(repo)["fork_count"] == 0
