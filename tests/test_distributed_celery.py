"""The real DAG under the CeleryExecutor: two `airflow celery worker` processes, a triggerer, a
scheduler, a dag-processor and an api-server, with a Redis broker and a Postgres metadata DB
of the test's own (tests/celery_cluster.py).

The token pool is small and its windows short, so quota runs out mid-run: quota gates and
fetches defer, and the triggerer wakes them. The fetch tasks of both workers lease the same
two tokens through the product's Redis, one request in flight per token, above a reserve.
The emulator's own accounting then shows whether they overspent: it counts a second request
in flight on a token as a secondary-limit hit, and logs what each charge left in its window.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from celery_cluster import CeleryCluster, Observer
from e2e_harness import airflow_major, duplicate_count, read_back
from fault_harness import conn_env
from support import diff_against_truth

from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1200),
    # The cluster is Airflow 3's (api-server with the task execution API, dag-processor); the
    # distributed run is proven on 3.3, the primary target.
    pytest.mark.skipif(airflow_major() < 3, reason="the Celery cluster under test is Airflow 3's"),
]
ALL = ["contributors", "forkers", "stargazers", "watchers"]
TOKENS = ["celery-e2e-token-a-7c41d2", "celery-e2e-token-b-e09f3b"]
WORKERS = ("worker1", "worker2")
RESERVE = 3
# 21 repositories (12 + the emulator's 9 special ones) in batches of 3: 7 batches for 4 fetch
# slots, which 2 workers x 2 processes can run all at once. A token has 8 core and 10 GraphQL
# units per 12 s window, 5 and 7 of them above the reserve; the run needs about 19 core and 32
# GraphQL units, so the pool runs dry two or three times. A quota gate holds its batch's core
# estimate (3) until its fetch spends it, so a gate that comes late in a window waits too.
CORE_LIMIT, GRAPHQL_LIMIT, WINDOW_S = 8, 10, 12
BATCH, SLOTS = 3, 4
STARTUP_TIMEOUT_S, RUN_TIMEOUT_S = 420, 600  # generous: the machine is small and shared


def test_two_celery_workers_share_the_token_pool_and_defer_through_the_triggerer(
    tmp_path, fresh_db, key_prefix, figure
):
    started = time.monotonic()
    dataset = build_dataset(DatasetSpec(seed=11, n_repos=12, n_users=1500, max_per_repo=400))
    names = dataset.repo_names()
    cfg = EmulatorConfig(
        tokens=[
            TokenConfig(
                name=f"t{i}",
                token=tok,
                core_limit=CORE_LIMIT,
                graphql_limit=GRAPHQL_LIMIT,
                collaborator_repos=("*",),
            )
            for i, tok in enumerate(TOKENS)
        ],
        window_seconds=WINDOW_S,
        latency_ms=40,  # requests take a while, so the workers' fetches overlap
        # A second request in flight on one token is a secondary-limit hit: the product must
        # send one at a time per token, whichever worker process sends it.
        secondary_max_concurrent=1,
    )
    db, dsn = fresh_db
    with EmulatorServer(dataset, cfg) as srv:
        env = conn_env(
            github_url=srv.url,
            tokens=TOKENS,
            pg_db=db,
            prefix=key_prefix,
            # max_inline_wait 0: every wait for a reset is a deferral, served by the triggerer
            github_extra={"reserve": RESERVE, "max_inline_wait": 0},
        )
        # Every component parses the DAG with the same number of mapped slots.
        env["GITHUB_REPO_USERS_FETCH_SLOTS"] = str(SLOTS)
        with CeleryCluster(
            tmp_path, env, workers=WORKERS, concurrency=2, startup_timeout=STARTUP_TIMEOUT_S
        ) as cluster:
            ready_s = time.monotonic() - started
            conf = {"repositories": names, "relations": ALL, "batch_size": BATCH, "full_refresh": True}
            run_id = cluster.trigger(conf)
            observer = Observer(cluster.meta_dsn, run_id)
            observer.start()
            try:
                state = cluster.wait(run_id, RUN_TIMEOUT_S)
            finally:
                seen = observer.stop()
            tis = cluster.task_instances(run_id)
            executions = cluster.worker_executions(run_id)
            fired = cluster.trigger_events(run_id)
            triggerer_jobs = cluster.job_ids("TriggererJob")
            assert state == "success", f"{cluster.summary(run_id)}\n{cluster.process_tails()}"
        stats = srv.stats()
        log = srv.request_log()

    # Exact data, no duplicates.
    truth = dataset.truth(ALL, collaborator_repos=["*"])
    assert diff_against_truth(truth, *read_back(dsn)) == []
    assert duplicate_count(dsn) == 0

    # Both workers ran fetch tasks, by each worker's own log (every start and resumption) and
    # by task_instance.hostname (each worker reports its own name there), sampled during the
    # run and as it ended; and at some moment fetches ran on both workers at once.
    fetch_runs = {
        w: Counter({k: n for k, n in executions[w].items() if k[0] == "collect.fetch"}) for w in WORKERS
    }
    assert all(fetch_runs.values()), executions
    fetch_hosts = {h for t, _, h in seen.running if t == "collect.fetch"} | {
        t["hostname"] for t in tis if t["task_id"] == "collect.fetch" and t["state"] == "success"
    }
    assert fetch_hosts == set(WORKERS), (fetch_hosts, tis)
    assert seen.hosts_at_once["collect.fetch"] == 2, seen.hosts_at_once

    # Deferrals happened and the triggerer served them. The metadata DB showed the tasks deferred
    # on triggers that the triggerer job had taken, then resuming with the trigger's event in
    # next_kwargs; the triggerer's own log shows triggers the DB had shown firing.
    assert seen.deferrals, "no task deferred: the quota never ran out"
    taken = {k: job for k, job in seen.deferrals.items() if job is not None}
    assert taken and set(taken.values()) <= triggerer_jobs, (seen.deferrals, triggerer_jobs)
    assert seen.resumed, "no task was seen resuming from a trigger event"
    fired_keys = {(task, index, trigger) for task, index, trigger, _ in fired}
    assert fired_keys & set(seen.deferrals), (fired, seen.deferrals)
    assert {job for *_, job in fired} <= triggerer_jobs, (fired, triggerer_jobs)

    # The two workers shared the pool without overspending, by the emulator's own accounting:
    # no request refused for quota or for a second request in flight on its token, and no
    # charge that left a token's window below the reserve.
    refused = [e for e in log if e.get("limit")]
    assert stats["primary_limit_hits"] == 0, refused
    assert stats["secondary_limit_hits"] == 0, refused
    lowest: dict[str, dict[str, int]] = {}
    for e in log:
        if e["cost"] and e["token"]:
            per = lowest.setdefault(e["token"], {})
            per[e["resource"]] = min(per.get(e["resource"], e["remaining"]), e["remaining"])
    assert sorted(lowest) == ["t0", "t1"], lowest
    below = {(t, r): n for t, per in lowest.items() for r, n in per.items() if n < RESERVE}
    assert not below, f"tokens went below the reserve of {RESERVE}: {below}"

    figure(
        "celery, 2 workers",
        workers=len(WORKERS),
        fetch_starts_per_worker={w: sum(c.values()) for w, c in fetch_runs.items()},
        fetch_slots_per_worker={w: len(c) for w, c in fetch_runs.items()},
        deferrals_served_by_triggerer=dict(Counter(task.rsplit(".", 1)[-1] for task, *_ in seen.deferrals)),
        resumed_with_event=len(seen.resumed),
        fired_in_triggerer_log=len(fired),
        units_spent={t: f"{c['core']}+{c['graphql']}" for t, c in sorted(stats["cost_by_token"].items())},
        min_remaining=dict(sorted(lowest.items())),
        reserve=RESERVE,
        secondary_hits=stats["secondary_limit_hits"],
        startup_s=round(ready_s),
        wall_s=round(time.monotonic() - started),
    )
