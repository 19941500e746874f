"""Author relations (issues, pull requests, discussions) against the emulator's ground truth:
exact counts and dates, odd authors, newest-first incremental runs, the per-run page cap."""

from __future__ import annotations

import pytest
from support import MemorySink, diff_against_truth, diff_authored, make_client, tally_items

from github_collector.collector import Collector, is_finished, new_batch_state
from github_collector.queries import AUTHOR_RELATIONS, RELATIONS
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.integration
TOK = "tok-authors-plain-3b9e1f"  # no rights on any repository
ALL = list(RELATIONS)


@pytest.fixture()
def dataset():
    return build_dataset(DatasetSpec(seed=11, n_repos=8, n_users=900, max_per_repo=400, max_items=450))


@pytest.fixture()
def emulator(dataset):
    srv = EmulatorServer(dataset, EmulatorConfig(tokens=[TokenConfig(name="plain", token=TOK)])).start()
    yield srv
    srv.stop()


def run(client, sink, repos, relations=ALL, previous=None, page_size=100, **kw):
    state = new_batch_state(repos, relations, previous, **kw)
    Collector(client, sink, page_size=page_size).run(state)
    assert is_finished(state)
    return state


def previous_of(sink: MemorySink) -> dict:
    return {
        k: {"relation_state": v.get("relation_state") or {}, "status": v["status"]}
        for k, v in sink.repos.items()
    }


def check(dataset, sink, names, relations=ALL) -> None:
    truth = dataset.truth(relations, token_name="plain")
    tallies, authorless = tally_items(sink.items.values())
    assert diff_authored(truth, tallies, authorless, sink.repos) == []
    assert diff_against_truth(truth, sink.users, sink.links, sink.repos) == []


def test_a_token_without_rights_collects_everything_but_stars_and_watchers(
    emulator, dataset, redis_client, key_prefix
):
    names = dataset.repo_names()
    client = make_client(emulator.url, [TOK], redis_client, key_prefix)
    sink = MemorySink()
    run(client, sink, names)
    check(dataset, sink, names)
    truth = dataset.truth(ALL, token_name="plain")
    kinds = {it["author_type"] for it in sink.items.values()}
    assert {None, "User", "Bot", "Mannequin"} <= kinds  # every odd author was met
    assert not any(it["author_type"] == "Mannequin" and it["author_id"] for it in sink.items.values())
    for name, want in truth["repos"].items():
        got = sink.repos[name.lower()] if name.lower() in sink.repos else sink.repos[name]
        if want["repo_id"] is None:
            continue
        statuses = got["relation_status"]
        # Hidden lists are restricted; everything else completes.
        assert {r for r, st in statuses.items() if st == "restricted"} == set(want["restricted"])
        assert all(statuses[r] in ("ok", "empty", "not_applicable") for r in AUTHOR_RELATIONS), (
            name,
            statuses,
        )
    assert any(r["restricted"] for r in truth["repos"].values())
    assert any(r["not_applicable"] for r in truth["repos"].values())
    # Bots are users of type Bot; nobody is a ghost.
    assert any(u["type"] == "Bot" for u in sink.users.values())
    assert 0 not in {uid for _, uid, _ in sink.links}


def test_incremental_runs_read_only_new_items_and_keep_counts_exact(
    emulator, dataset, redis_client, key_prefix
):
    names = dataset.repo_names()
    client = make_client(emulator.url, [TOK], redis_client, key_prefix)
    sink = MemorySink()
    run(client, sink, names, AUTHOR_RELATIONS)
    # Unchanged: the summary only.
    before = len(emulator.request_log())
    sink2 = MemorySink()
    state = run(client, sink2, names, AUTHOR_RELATIONS, previous_of(sink))
    assert all(
        s["status"] in ("unchanged", "empty", "not_applicable")
        for r in state["repos"].values()
        for s in r["streams"].values()
        if r["status"] in ("ok", "moved")
    )
    assert len(emulator.request_log()) - before == 1 and not sink2.items
    # New items, some created in the very second of the stored mark, by people, bots and a ghost.
    target = next(
        n
        for n in names
        if (dataset.lookup_full_name(n)[0] or None) and len(dataset.lookup_full_name(n)[0].pulls) > 150
    )
    dataset.add_items(target, "pull_request_authors", 3, same_second=True)
    dataset.add_items(target, "pull_request_authors", 5, ghosts=1, bots=1)
    dataset.add_items(target, "issue_authors", 2) if dataset.lookup_full_name(target)[0].has_issues else None
    previous = previous_of(sink)
    sink3 = MemorySink()
    state = run(client, sink3, names, AUTHOR_RELATIONS, previous)
    # Only the lists with news are paged: newest first, one page each, down to the stored mark.
    paged = {
        (k, rel): (s["pages"], bool(s["stop_at"]))
        for k, r in state["repos"].items()
        for rel, s in r["streams"].items()
        if s["pages"]
    }
    repo = dataset.lookup_full_name(target)[0]
    want = {(target.lower(), "pull_request_authors"): (1, True)}
    if repo.has_issues:
        want[(target.lower(), "issue_authors")] = (1, True)
    assert paged == want
    # What both runs staged, together, is the truth: nothing read twice counts twice.
    merged = MemorySink()
    for s in (sink, sink3):
        merged.items.update(s.items)
        merged.links.update(s.links)
        merged.users.update(s.users)
    merged.repos = {**sink.repos, **sink3.repos}
    truth = dataset.truth(AUTHOR_RELATIONS, token_name="plain")
    tallies, authorless = tally_items(merged.items.values())
    assert diff_authored(truth, tallies, authorless, merged.repos) == []


def test_a_capped_listing_is_partial_and_goes_on_next_run(emulator, dataset, redis_client, key_prefix):
    name = max(dataset.repo_names(), key=lambda n: len(getattr(dataset.lookup_full_name(n)[0], "pulls", [])))
    repo = dataset.lookup_full_name(name)[0]
    dataset.add_items(name, "pull_request_authors", 260 - len(repo.pulls), ghosts=3, bots=4)
    client = make_client(emulator.url, [TOK], redis_client, key_prefix)
    sinks, previous, rounds = [], None, 0
    while True:
        sink = MemorySink()
        run(client, sink, [name], ["pull_request_authors"], previous, max_author_pages=1)
        sinks.append(sink)
        rec = sink.repos[name.lower()] if name.lower() in sink.repos else sink.repos[name]
        status = rec["relation_status"]["pull_request_authors"]
        rounds += 1
        if status == "ok":
            break
        # Never recorded as complete before its end: partial, unavailable, with where to go on.
        assert status == "partial" and "pull_request_authors" in rec["unavailable_relations"]
        assert rec["relation_state"]["pull_request_authors"]["resume"]
        previous = previous_of(sink)
        if rounds == 1:  # items opened meanwhile come at the end of the oldest-first listing
            dataset.add_items(name, "pull_request_authors", 50)
        assert rounds < 10
    assert rounds == -(-len(repo.pulls) // 100)
    merged = {}
    for s in sinks:
        merged.update(s.items)
    tallies, authorless = tally_items(merged.values())
    truth = dataset.truth(["pull_request_authors"], token_name="plain", repos=[name])
    assert diff_authored(truth, tallies, authorless, sinks[-1].repos) == []
    assert (
        sum(n for n, _, _ in tallies.values()) + sum(authorless[repo.id]["pull_request_author"].values())
        == 310
    )


def test_quota_running_out_mid_listing_resumes_from_the_checkpoint(dataset, redis_client, key_prefix):
    import time

    from github_collector.errors import QuotaExhausted

    name = max(dataset.repo_names(), key=lambda n: len(getattr(dataset.lookup_full_name(n)[0], "pulls", [])))
    dataset.add_items(name, "pull_request_authors", 400)
    cfg = EmulatorConfig(tokens=[TokenConfig(name="plain", token=TOK, graphql_limit=2)], window_seconds=2)
    with EmulatorServer(dataset, cfg) as srv:
        client = make_client(srv.url, [TOK], redis_client, key_prefix, max_inline_wait=0)
        sink = MemorySink()
        state = new_batch_state([name], ["pull_request_authors"], max_author_pages=0)
        stops = 0
        for _ in range(100):  # as the deferred fetch does: wait for the reset, go on from the state
            try:
                Collector(client, sink).run(state)
                break
            except QuotaExhausted as exc:
                stops += 1
                time.sleep(max(0.0, exc.reset_at - time.time()) + 0.1)
        assert is_finished(state) and stops >= 2
        pages = [
            p
            for e in srv.request_log()
            if e["status"] == 200
            for p in e.get("pages") or []
            if ":pullRequests:" in p
        ]
        # The summary names the list once (a count: ":None", like the first page); every page
        # after the first was fetched once.
        after_first = [p for p in pages if not p.endswith(":None")]
        assert len(after_first) == len(set(after_first)) and len(pages) - len(after_first) == 2, pages
    truth = dataset.truth(["pull_request_authors"], token_name="plain", repos=[name])
    tallies, authorless = tally_items(sink.items.values())
    assert diff_authored(truth, tallies, authorless, sink.repos) == []


def test_an_item_github_would_not_serve_makes_the_listing_partial():
    """A null item in a page (GitHub nulls what it could not serve) is never dropped silently:
    the list is partial and keeps no new mark, so the next run reads it again."""
    from types import SimpleNamespace

    from github_collector.collector import Step

    client = SimpleNamespace(stats=SimpleNamespace(core_spent=0, graphql_spent=0))
    collector = Collector(client, MemorySink())
    state = new_batch_state(["o/r"], ["issue_authors"])
    repo = state["repos"]["o/r"]
    repo.update(repo_id=7, full_name="o/r", status="ok")
    item = {"number": 1, "createdAt": "2026-01-02T00:00:00Z", "author": None}
    conn = {"nodes": [item, None], "pageInfo": {"hasNextPage": False, "endCursor": "c1"}}
    step = Step(state=state)
    collector._apply_authored(state, repo, "issue_authors", conn, step)
    stream = repo["streams"]["issue_authors"]
    assert (stream["done"], stream["status"], stream["hwm"]) == (True, "partial", None)
    assert "1 item(s) GitHub would not serve" in repo["detail"]
    assert [lk["number"] for lk in step.links] == [1] and step.users == []  # the ghost: no user


PR = "pull_request_authors"
PAGE = 10  # items per page in the capped newest-first tests: a "day" brings more than a page


def relation_record(sink: MemorySink, name: str) -> dict:
    return sink.repos[name.lower()] if name.lower() in sink.repos else sink.repos[name]


def capped_days(
    emulator, dataset, client, name, previous, sinks, *, adding_days, per_day, cap=1, tamper=None
):
    """Daily runs capped at ``cap`` pages of PAGE items: ``per_day`` new pull requests for
    ``adding_days`` days, then none, until a run reads the list down to its mark. Returns the
    statuses, the run index at which additions stopped, the items unread then, and the
    newest-first pages the runs fetched."""
    start = len(emulator.request_log())
    statuses, stop_run, unread = [], None, None
    for day in range(60):
        if day < adding_days:
            dataset.add_items(name, PR, per_day, ghosts=1, bots=1)
        elif stop_run is None:
            stop_run = day
            read = {k for s in sinks for k in s.items}
            unread = len(dataset.lookup_full_name(name)[0].pulls) - len(read)
        if tamper and day == adding_days // 2:
            tamper(previous)
        sink = MemorySink()
        run(client, sink, [name], [PR], previous, page_size=PAGE, max_author_pages=cap)
        sinks.append(sink)
        rec = relation_record(sink, name)
        statuses.append(rec["relation_status"][PR])
        previous = previous_of(sink)
        if statuses[-1] == "ok" and day >= adding_days:
            break
        # Never complete before it is read down to its mark: partial, unavailable.
        assert statuses[-1] == "partial" and PR in rec["unavailable_relations"], (day, statuses)
    assert statuses[-1] == "ok", f"still {statuses[-1]} after {len(statuses)} runs"
    pages = [
        p
        for e in emulator.request_log()[start:]
        if e["status"] == 200
        for p in e.get("pages") or []
        if ":pullRequests:" in p and ":desc" in p
    ]
    return statuses, stop_run, unread, pages


def first_listing(emulator, dataset, redis_client, key_prefix):
    name = max(dataset.repo_names(), key=lambda n: len(getattr(dataset.lookup_full_name(n)[0], "pulls", [])))
    client = make_client(emulator.url, [TOK], redis_client, key_prefix)
    sink = MemorySink()
    run(client, sink, [name], [PR], page_size=PAGE, max_author_pages=0)  # in full: the mark
    assert relation_record(sink, name)["relation_status"][PR] == "ok"
    return name, client, [sink]


def assert_exact(dataset, name, sinks) -> None:
    merged: dict = {}
    for s in sinks:
        merged.update(s.items)  # stored by number: an item read twice is one item
    assert len(merged) == len(dataset.lookup_full_name(name)[0].pulls)
    tallies, authorless = tally_items(merged.values())
    truth = dataset.truth([PR], token_name="plain", repos=[name])
    assert diff_authored(truth, tallies, authorless, sinks[-1].repos) == []


@pytest.mark.parametrize("cap", [1, 3])
def test_a_capped_newest_first_listing_reads_its_gap_and_catches_up(
    emulator, dataset, redis_client, key_prefix, cap
):
    """More new items a day than the cap reads: each run goes on down the gap the last one
    left (never reading its pages again) rather than reading the newest pages again, and once
    the additions stop the listing reaches the truth. With a cap of several pages, a run that
    reaches the old mark goes on from the newest item down to the gap's top."""
    name, client, sinks = first_listing(emulator, dataset, redis_client, key_prefix)
    statuses, stop_run, unread, pages = capped_days(
        emulator,
        dataset,
        client,
        name,
        previous_of(sinks[0]),
        sinks,
        adding_days=4,
        per_day=cap * PAGE + 15,
        cap=cap,
    )
    assert statuses[:stop_run] == ["partial"] * stop_run and statuses[-1] == "ok"
    # At most the cap's pages per run; a page below the newest one is never fetched twice.
    assert len(pages) <= cap * len(statuses)
    below_top = [p for p in pages if ":None:" not in p]
    assert len(below_top) == len(set(below_top)), pages
    # Once the additions stop, the runs read only pages not read before: the unread items'
    # pages, one more to reach the old mark, one to see nothing is newer than the gap's top.
    assert len(statuses) - stop_run <= -(-(-(-unread // PAGE) + 2) // cap), (statuses, stop_run, unread)
    assert_exact(dataset, name, sinks)


def test_a_gap_cursor_github_refuses_reads_from_the_newest_down_to_the_old_mark(
    emulator, dataset, redis_client, key_prefix
):
    name, client, sinks = first_listing(emulator, dataset, redis_client, key_prefix)
    floors = []

    def tamper(previous):
        entry = next(iter(previous.values()))
        rs = entry["relation_state"][PR]
        floors.append(rs["gap"]["floor"])
        entry["relation_state"] = {**entry["relation_state"], PR: {**rs, "gap": {**rs["gap"], "cursor": "x"}}}

    statuses, _, _, pages = capped_days(
        emulator,
        dataset,
        client,
        name,
        previous_of(sinks[0]),
        sinks,
        adding_days=4,
        per_day=25,
        tamper=tamper,
    )
    # The run given the refused cursor read the newest page instead, kept the old mark as the
    # gap's floor, and never claimed the list complete before it was read down to it.
    refused_run = 4 // 2 + 1  # sinks[0] is the first listing
    after = relation_record(sinks[refused_run], name)["relation_state"][PR]
    assert after["gap"]["floor"] == floors[0] and after["gap"]["top"] > floors[0]
    refused = [i for i, p in enumerate(pages) if p.endswith(":x:desc:first10")]
    assert len(refused) == 1 and pages[refused[0] + 1].endswith(":None:desc:first10"), pages
    assert statuses[-1] == "ok"
    assert_exact(dataset, name, sinks)
