"""Quota efficiency (baseline vs product) and incremental cost, from the emulator's accounting.

The product runs as the DAG's fetch tasks run it: the plan's batches (50 repositories by
default), one Collector per batch, records staged in Redis through Staging.write_step. Only
Airflow is left out (section e2e measures it). Every figure in units is what the emulator
charged the token: REST core requests plus GraphQL points.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable

from baseline import Baseline
from common import ALL_RELATIONS, TOKEN, BenchRedis, Emulator, bench_redis, make_client, say, units_delta

FIXTURE_PREFIX = "emulator-fixtures/"
CHANGE_SHARE = 0.01  # the "~1% new forks and contributors" of the incremental case


class StagingSink:
    """What the fetch task's sink does, without Airflow: one MULTI/EXEC per step."""

    def __init__(self, staging, batch: int) -> None:
        self.staging = staging
        self.batch = batch
        self.steps = 0

    def write(self, step) -> None:
        self.staging.write_step(self.batch, step)
        self.steps += 1


def measured_collector(queries: list[tuple[int, int]]):
    """The product's Collector, noting (connection pages, profile ids) of every GraphQL query."""
    from github_collector.collector import Collector

    class MeasuredCollector(Collector):
        def _run_graphql(self, state, query, plan, exclude=frozenset()):
            queries.append((query.connection_count(), sum(len(ids) for ids in query.node_ids)))
            return super()._run_graphql(state, query, plan, exclude)

    return MeasuredCollector


def packing(queries: list[tuple[int, int]]) -> dict:
    """How full the GraphQL queries were: each costs 1 point up to 49 pages, so pages per query
    is users per point. Summary-only queries (no pages, no ids) are counted apart."""
    buckets = {
        "summaries only": 0,
        "profiles only": 0,
        "1 page": 0,
        "2-3 pages": 0,
        "4-7 pages": 0,
        "8+ pages": 0,
    }
    for pages, ids in queries:
        if pages == 0:
            buckets["profiles only" if ids else "summaries only"] += 1
        elif pages == 1:
            buckets["1 page"] += 1
        elif pages <= 3:
            buckets["2-3 pages"] += 1
        elif pages <= 7:
            buckets["4-7 pages"] += 1
        else:
            buckets["8+ pages"] += 1
    with_pages = [p for p, _ in queries if p]
    return {
        "queries": len(queries),
        "by_pages": buckets,
        "mean_pages_per_query": round(sum(with_pages) / max(1, len(with_pages)), 2),
    }


DAY0 = 739_900  # a day number (date ordinal) the daily figure starts after


def product_run(
    emu: Emulator,
    r: BenchRedis,
    repos: list[str],
    previous: dict[str, dict] | None = None,
    fresh: Callable[[list[int]], set[int]] | None = None,
    profiler=None,
    queries: list[tuple[int, int]] | None = None,
    day: int | None = None,
    relist_every: int = 0,
    relations: list[str] | None = None,
) -> dict:
    """One run of the product over ``repos``; returns its cost and what it staged. With a
    ``day``, the repositories due that day get their scheduled complete re-listing, as the
    plan task picks them (run_tasks.schedule)."""
    from github_collector.collector import Collector, new_batch_state, relist_due
    from github_collector.plan import build_plan
    from github_collector.settings import DAG_ID
    from github_collector.staging import Staging, run_namespace

    plan = build_plan(repos, relations or ALL_RELATIONS, 50)
    staging = Staging(r.client, run_namespace(r.prefix, DAG_ID, f"bench_{uuid.uuid4().hex[:10]}"))
    staging.save_plan(plan)  # with the loss sentinel every staged step is checked against
    before = emu.units()
    requests = steps = 0
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for i, batch in enumerate(plan["batches"]):
        # One client per batch, counting what it spends against a reservation as a fetch slot does.
        client = make_client(emu.url, r.client, r.prefix, reservation_id=f"{staging.ns}slot:{i}")
        sink = StagingSink(staging, i)
        relist = [
            n
            for n in batch
            if day is not None
            and relist_due(
                ((previous or {}).get(n) or {}).get("repo_id"),
                ((previous or {}).get(n) or {}).get("relation_state") or {},
                day,
                relist_every,
            )
        ]
        state = new_batch_state(
            batch,
            plan["relations"],
            previous or {},
            day=day,
            relist=relist,
            max_author_pages=plan["max_author_pages"],
        )
        cls = Collector if queries is None else measured_collector(queries)
        cls(client, sink, profile_is_fresh=fresh).run(state)
        requests += client.stats.requests
        steps += sink.steps
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - t0
    units = units_delta(emu.units(), before)
    profiled, user_ids = 0, set()
    for _, docs in staging.scan("users", 5000):
        for d in docs:
            user_ids.add(int(d["user_id"]))
            profiled += bool(d.get("profile_complete"))
    repo_recs = {k.decode(): json.loads(v) for k, v in r.client.hgetall(staging.key("repos")).items()}
    links = staging.count("links")
    roles: Counter = Counter()  # (repo_id, role), from the link keys "repo_id:user_id:role"
    for fld, _ in r.client.hscan_iter(staging.key("links"), count=5000):
        repo_id, _, role = fld.decode().split(":")
        roles[int(repo_id), role] += 1
    staging.drop()
    return {
        "units": units,
        "seconds": seconds,
        "requests": requests,
        "steps": steps,
        "batches": len(plan["batches"]),
        "users": len(user_ids),
        "profiled": profiled,
        "links": links,
        "user_ids": user_ids,
        "repo_records": repo_recs,
        "roles": roles,
    }


def previous_from(records: dict[str, dict], older: dict[str, dict] | None = None) -> dict[str, dict]:
    """What loader.previous_state would read back after committing these repo records
    (the commit merges relation_state per relation, so relations not touched keep theirs)."""
    out = dict(older or {})
    for name, rec in records.items():
        state = dict((out.get(name) or {}).get("relation_state") or {})
        state.update(rec.get("relation_state") or {})
        out[name] = {"status": rec["status"], "repo_id": rec.get("repo_id"), "relation_state": state}
    return out


def run(spec: dict, backfill_dates: int = 30) -> dict:
    out: dict = {"dataset": spec}
    with Emulator(spec, truth=True) as emu:
        repos = emu.repos
        out["dataset_repos"] = len(repos)
        out["truth"] = emu.truth
        say(f"quota: baseline over {len(repos)} repositories (~{emu.truth['users']:,} users)")
        before = emu.units()
        base = Baseline(emu.url, TOKEN).run(repos, ALL_RELATIONS)
        base_units = units_delta(emu.units(), before)
        out["baseline"] = {
            "units": base_units,
            "seconds": round(base.seconds, 1),
            "requests": base.requests,
            "users": base.users,
            "links": base.links,
            "units_per_user": round(base_units["total"] / max(1, base.users), 4),
        }

        with bench_redis("quota") as r:
            say("quota: product, full collection")
            queries: list[tuple[int, int]] = []
            full = product_run(emu, r, repos, queries=queries)
            out["product"] = {
                "units": full["units"],
                "seconds": round(full["seconds"], 1),
                "requests": full["requests"],
                "steps": full["steps"],
                "batches": full["batches"],
                "users": full["users"],
                "profiled": full["profiled"],
                "links": full["links"],
                "units_per_user": round(full["units"]["total"] / max(1, full["profiled"]), 5),
                "graphql_packing": packing(queries),
            }
            out["ratio_baseline_over_product"] = round(
                out["baseline"]["units_per_user"] / max(out["product"]["units_per_user"], 1e-9), 1
            )

            known = set(full["user_ids"])
            all_fresh = set  # profile_is_fresh saying every asked user is fresh

            say("quota: incremental run on unchanged repositories")
            prev = previous_from(full["repo_records"])
            inc = product_run(emu, r, repos, prev, fresh=all_fresh)
            n = len(repos)
            out["incremental_unchanged"] = {
                "units": inc["units"],
                "seconds": round(inc["seconds"], 2),
                "requests": inc["requests"],
                "units_per_repo": round(inc["units"]["total"] / n, 4),
                "links_restaged": inc["links"],
            }
            last = inc

            # Daily runs on unchanged repositories over one re-listing period: each repository
            # gets its complete re-listing on one of the days (a hash of its id picks which).
            from github_collector.settings import DEFAULT_RELIST_DAYS

            every = DEFAULT_RELIST_DAYS
            say(f"quota: {every} daily runs on unchanged repositories, with the scheduled re-listing")
            prev_d = previous_from(inc["repo_records"], prev)
            daily = []
            for d in range(1, every + 1):
                run_ = product_run(emu, r, repos, prev_d, fresh=all_fresh, day=DAY0 + d, relist_every=every)
                prev_d = previous_from(run_["repo_records"], prev_d)
                daily.append(run_["units"]["total"])
            out["daily_unchanged_with_relisting"] = {
                "relist_days": every,
                "units_per_day": daily,
                "units_per_repo_per_day": round(sum(daily) / every / n, 4),
            }

            # ~1% new forks, then ~1% new contributors, in proportion to each repository's
            # lists (the big ones change most, as on GitHub; rounding leaves the smallest alone).
            # Forks page newest first down to the stored mark; contributors are REST lists
            # revalidated with ETags, so the two mechanisms are measured apart.
            base_links = {
                role: sum(n for (_, ro), n in full["roles"].items() if ro == role)
                for role in ("forker", "contributor")
            }
            for op, role in (("add_forks", "forker"), ("add_contributors", "contributor")):
                sizes = {
                    name: full["roles"][rec["repo_id"], role]
                    for name, rec in full["repo_records"].items()
                    if not name.startswith(FIXTURE_PREFIX) and rec["status"] == "ok"
                }
                adds = {name: round(n * CHANGE_SHARE) for name, n in sizes.items()}
                if not any(adds.values()):  # a small dataset: change the biggest list by one
                    adds[max(sizes, key=sizes.get)] = 1
                for name, k in adds.items():
                    if k:
                        emu.mutate(op, full_name=name, n=k)
                added = sum(adds.values())
                say(f"quota: incremental run after {added} new {role}s")
                prev = previous_from(last["repo_records"], prev)
                changed = product_run(
                    emu, r, repos, prev, fresh=lambda ids, known=known: {i for i in ids if i in known}
                )
                out[f"incremental_{role}s_1pct"] = {
                    "added": added,
                    "change_share": round(added / max(1, base_links[role]), 4),
                    "units": changed["units"],
                    "requests": changed["requests"],
                    "units_per_added": round(changed["units"]["total"] / max(1, added), 3),
                    "share_of_full_units": round(
                        changed["units"]["total"] / max(1, full["units"]["total"]), 3
                    ),
                    "links_restaged": changed["links"],
                    "profiles_fetched": changed["profiled"],
                }
                known |= changed["user_ids"]
                last = changed

            say(f"quota: backfill of {backfill_dates} dates (incremental runs, nothing changes)")
            prev = previous_from(last["repo_records"], prev)
            total_bf, t0 = 0, time.perf_counter()
            per_run = []
            for _ in range(backfill_dates):
                run_ = product_run(emu, r, repos, prev, fresh=all_fresh)
                prev = previous_from(run_["repo_records"], prev)
                per_run.append(run_["units"]["total"])
                total_bf += run_["units"]["total"]
            check = inc["units"]["total"]
            expected = full["units"]["total"] + backfill_dates * check
            actual = full["units"]["total"] + total_bf
            out["backfill"] = {
                "dates": backfill_dates,
                "seconds": round(time.perf_counter() - t0, 1),
                "units_incremental_runs": total_bf,
                "units_per_run_min_max": [min(per_run), max(per_run)],
                "actual_total": actual,
                "expected_total": expected,
                "actual_over_expected": round(actual / max(1, expected), 3),
                "times_cheaper_than_full_runs": round(
                    (backfill_dates + 1) * full["units"]["total"] / max(1, actual), 1
                ),
            }
    return out
