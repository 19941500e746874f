"""GitHub misbehaving: 5xx bursts, answers slower than the timeout, broken JSON, GraphQL 200s
carrying errors, a `link` header looping back, 301 chains and loops, a repository renamed
between two runs.

Each must end in a retried success or a recorded status; none may loop forever, stop the
other batches, or leave wrong rows.
"""

from __future__ import annotations

import random
import threading

import psycopg
import pytest
from e2e_harness import duplicate_count, read_back
from fault_harness import ALL, InProcessRun, set_connections
from support import MemorySink, diff_against_truth, make_client

from github_collector.collector import Collector, new_batch_state
from github_collector.errors import TooManyRedirects
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
TOKENS = ["github-fault-token-a-61f0d2", "github-fault-token-b-9ac347"]


@pytest.fixture()
def dataset():
    # Function scope: some tests rename repositories.
    return build_dataset(DatasetSpec(seed=59, n_repos=8, n_users=1200, max_per_repo=320))


@pytest.fixture()
def emulator(dataset):
    seed = random.randrange(10_000)
    print(f"fault seed {seed}")
    cfg = EmulatorConfig(
        tokens=[TokenConfig(name=f"t{i}", token=t, collaborator_repos=("*",)) for i, t in enumerate(TOKENS)],
        fault_seed=seed,
    )
    with EmulatorServer(dataset, cfg) as srv:
        yield srv


@pytest.fixture()
def run_dag(emulator, monkeypatch, fresh_db, key_prefix):
    """run_dag(run_id, **github_extra) -> the outcome of plan >> collect >> commit, in process."""

    def run(run_id: str, conf: dict | None = None, **extra) -> dict:
        set_connections(
            monkeypatch,
            github_url=emulator.url,
            tokens=TOKENS,
            pg_db=fresh_db[0],
            prefix=key_prefix,
            github_extra=extra,
        )
        conf = {"repositories": emulator.app.ds.repo_names(), "batch_size": 3, **(conf or {})}
        return InProcessRun(run_id, slots=2).run(conf)

    return run


def _exact(dataset, fresh_db, out) -> None:
    assert out["commit"].state == "success", repr(out["commit"].error)
    assert all(o.state in ("success", "skipped") for o in out["slots"].values()), [
        repr(o.error) for o in out["slots"].values()
    ]
    truth = dataset.truth(ALL, collaborator_repos=["*"])
    assert diff_against_truth(truth, *read_back(fresh_db[1])) == []
    assert duplicate_count(fresh_db[1]) == 0


def test_5xx_bursts_are_retried(dataset, emulator, run_dag, fresh_db, figure):
    emulator.set_faults(fault_burst={"status": 503, "count": 3})
    stop = threading.Event()

    def rearm() -> None:  # a new burst every 20 requests, cycling through GitHub's 5xx
        statuses = [502, 500, 504, 503]
        mark = 0
        while not stop.wait(0.01):
            n = emulator.stats()["requests"]
            if n >= mark + 20:
                mark = n
                emulator.set_faults(fault_burst={"status": statuses[n % 4], "count": 3})

    threading.Thread(target=rearm, daemon=True).start()
    try:
        out = run_dag("bursts")
    finally:
        stop.set()
    _exact(dataset, fresh_db, out)
    bursts = emulator.stats()["faults"]["burst"]
    assert bursts >= 6
    figure("5xx bursts", answers_5xx=bursts, outcome="retried, exact")


def test_answers_slower_than_the_timeout_are_retried(dataset, emulator, run_dag, fresh_db, figure):
    emulator.set_faults(fault_slow_rate=0.12, fault_slow_seconds=2.5)
    out = run_dag("slow", timeout=1)
    _exact(dataset, fresh_db, out)
    slow = emulator.stats()["faults"]["slow"]
    assert slow >= 1
    figure("answers past the 1 s timeout", timed_out=slow, outcome="retried, exact")


def test_truncated_or_invalid_json_is_retried(dataset, emulator, run_dag, fresh_db, figure):
    emulator.set_faults(fault_bad_json_rate=0.12)
    out = run_dag("bad-json")
    _exact(dataset, fresh_db, out)
    faults = emulator.stats()["faults"]
    broken = faults["bad_json_truncated"] + faults["bad_json_html"]
    assert broken >= 1
    figure("truncated or HTML bodies", broken=broken, outcome="retried, exact")


def test_graphql_200_with_errors_is_retried_smaller(dataset, emulator, run_dag, fresh_db, figure):
    # Rates high enough that a run of this size meets both kinds more than once.
    emulator.set_faults(fault_graphql_error_rate=0.25, fault_graphql_partial_rate=0.25)
    out = run_dag("graphql-errors")
    _exact(dataset, fresh_db, out)
    faults = emulator.stats()["faults"]
    assert faults["graphql_error"] + faults["graphql_partial"] >= 2
    figure(
        "GraphQL 200 carrying errors",
        whole_query_errors=faults["graphql_error"],
        partial_errors=faults["graphql_partial"],
        outcome="retried, exact",
    )


def test_a_link_header_looping_back_stops_with_a_recorded_note(dataset, emulator, run_dag, fresh_db, figure):
    emulator.set_faults(fault_link_loop="*")
    out = run_dag("link-loop")
    _exact(dataset, fresh_db, out)  # every page was read before the loop was noticed
    with psycopg.connect(fresh_db[1]) as c:
        noted = c.execute(
            "SELECT count(*) FROM github_repo_request WHERE detail LIKE '%link header points back%'"
        ).fetchone()[0]
    assert noted >= 1
    assert emulator.stats()["faults"]["link_loop"] >= noted
    figure("link header looping back", repos_noted=noted, outcome="stopped, exact")


def test_301_chains_are_followed_and_loops_refused(emulator, redis_client, key_prefix, figure):
    from github_emulator import RENAMED_REPO_NEW_NAME, SPECIAL_REPOS

    client = make_client(emulator.url, TOKENS[:1], redis_client, key_prefix)
    emulator.set_faults(fault_redirect_chain=4)
    resp = client.rest(f"/repos/{SPECIAL_REPOS['renamed']}", conditional=False)
    assert resp.status == 200 and resp.data["full_name"] == RENAMED_REPO_NEW_NAME
    assert len(resp.redirects) == 4
    emulator.set_faults(fault_redirect_chain=0, fault_redirect_loop=True)
    before = emulator.stats()["requests"]
    with pytest.raises(TooManyRedirects, match="redirect loop"):
        client.rest(f"/repos/{SPECIAL_REPOS['renamed']}", conditional=False)
    sent = emulator.stats()["requests"] - before
    assert sent <= 3  # the loop is noticed at the first URL seen again
    figure("301 chain and loop", chain_hops_followed=4, loop_requests_before_refusal=sent)


def test_a_rename_mid_batch_follows_301s_and_a_loop_is_a_recorded_status(
    dataset, emulator, redis_client, key_prefix
):
    """Renamed between the summary (GraphQL) and the contributors pages (REST)."""
    names = [n for n in dataset.repo_names() if not n.startswith("emulator-fixtures/")][:3]
    client = make_client(emulator.url, TOKENS[:1], redis_client, key_prefix)
    sink = MemorySink()
    collector = Collector(client, sink)
    state = new_batch_state(names, ["contributors"])
    collector.step(state)  # the summary: ids and current names
    moved, looped, _ = names
    dataset.rename_repo(moved, moved + "-renamed")
    dataset.rename_repo(looped, looped + "-renamed")
    emulator.set_faults(fault_redirect_chain=3)
    while state["repos"][moved]["streams"]["contributors"]["done"] is False:
        collector.step(state)
    emulator.set_faults(fault_redirect_chain=0, fault_redirect_loop=True)
    collector.run(state)  # ends: the looping repository is recorded, the others finish
    truth = dataset.truth(["contributors"], collaborator_repos=["*"])
    ok_ids = {state["repos"][n]["repo_id"] for n in (moved, names[2])}
    want = {k for k, v in truth["repo_users"].items() if k[0] in ok_ids}
    got = {(r, u) for r, u, _ in sink.links if r in ok_ids}
    assert got == want
    loop = state["repos"][looped]
    assert loop["streams"]["contributors"]["status"] == "unavailable"
    assert "redirect loop" in loop["detail"]


def test_a_repository_renamed_between_two_runs_keeps_its_id(dataset, emulator, run_dag, fresh_db, figure):
    first = run_dag("before-rename")
    _exact(dataset, fresh_db, first)
    name = next(n for n in dataset.repo_names() if not n.startswith("emulator-fixtures/"))
    new = name.split("/")[0] + "/renamed-" + name.split("/")[1]
    with psycopg.connect(fresh_db[1]) as c:
        repo_id = c.execute(
            "SELECT repo_id FROM github_repo_request WHERE requested_name = %s", (name,)
        ).fetchone()[0]
    emulator.app.ds.rename_repo(name, new)
    second = run_dag("after-rename")  # the scheduled run still asks for the old name
    _exact(dataset, fresh_db, second)
    third = run_dag("new-name", {"repositories": [new]})  # and a run that asks for the new one
    assert third["commit"].state == "success"
    with psycopg.connect(fresh_db[1]) as c:
        rows = c.execute(
            "SELECT repo_id, full_name, status FROM github_repository WHERE repo_id = %s", (repo_id,)
        ).fetchall()
        requests_ = dict(
            c.execute(
                "SELECT requested_name, status FROM github_repo_request WHERE repo_id = %s", (repo_id,)
            ).fetchall()
        )
        n_repos = c.execute(
            "SELECT count(*) FROM github_repository WHERE full_name ILIKE %s", (f"%{name.split('/')[1]}%",)
        ).fetchone()[0]
    assert rows == [(repo_id, new, "ok")]  # one row, keyed by id, with the current name
    assert requests_ == {name: "moved", new.lower(): "ok"}
    assert n_repos == 1
    assert duplicate_count(fresh_db[1]) == 0
    figure("repository renamed between runs", repo_rows=1, old_name="moved", new_name="ok", duplicates=0)
