"""`make bench`: quota, incremental, end-to-end, commit and profile figures, as a table and
as JSON (bench/results.json). Figures only: nothing here asserts a timing.

    python bench/run.py                 # every figure (make bench): 100 repos, 1k and 10k repos, commits to 1M
    python bench/run.py --quick         # small dataset and scale, commit of 10k (bench/results-quick.json)
    python bench/run.py --only quota,commit --scales ''   # some sections only, no scale runs
    python bench/run.py --only quota_bound --scales ''    # the quota-bound runs alone (~15 min)

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, say

SECTIONS = ("quota", "authors", "e2e", "commit", "profile", "quota_bound")
# ~100 repositories and ~100k users, heavy-tailed (Zipf), plus the emulator's special repos.
MAIN_SPEC = {"seed": 1, "n_repos": 100, "n_users": 100_000, "max_per_repo": 35_000, "max_contributors": 700}
QUICK_SPEC = {"seed": 1, "n_repos": 20, "n_users": 3_000, "max_per_repo": 2_000}
# The author relations' dataset: the main one with three repositories of 10k+ issues and about
# as many pull requests (quick: one of 3,000).
AUTHORS_SPEC = MAIN_SPEC | {"big_item_repos": 3, "big_items": 12_000}
QUICK_AUTHORS_SPEC = QUICK_SPEC | {"big_item_repos": 1, "big_items": 3_000}
GOALS = {
    "units_per_user": 0.025,
    "ratio_vs_baseline": 40,
    "units_per_repo_unchanged": 0.05,
    "author_units_per_user": 0.02,
    "commit_rows_per_s": 50_000,
    "commit_rss_mb": 300,
}


SCALES = [1000, 10_000]  # end to end on many small repositories, to show how cost grows
QUICK_SCALES = [300]
COMMIT_SIZES = [10_000, 100_000, 1_000_000]
QUICK_COMMIT_SIZES = [10_000]


def scale_spec(n: int) -> dict:
    """Many small repositories (about 10 users each, none above 200 per list)."""
    return {
        "seed": 2,
        "n_repos": n,
        "n_users": 10 * n,
        "max_per_repo": 200,
        "max_contributors": 50,
        "special_repos": False,
    }


# -- formatting ---------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list], indent: str = "  ") -> str:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append(
            indent
            + "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        digits = 4 if abs(v) < 1 else 3 if abs(v) < 10 else 1
        text = f"{v:,.{digits}f}"
        if digits > 1:
            text = text.rstrip("0")
            text += "0" if text.endswith(".") else ""
        return text
    return str(v)


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


# -- sections ---------------------------------------------------------------------------------------
def render_quota(q: dict, goals: list) -> str:
    b, p = q["baseline"], q["product"]
    t = q["truth"]
    out = [
        f"1. Quota efficiency: {q['dataset_repos']} repositories, all four relations, a collaborator token "
        f"(ground truth {t['users']:,} users, {t['links']:,} links)",
        table(
            ["", "units", "core", "graphql", "requests", "users w/ profile", "links", "units/user", "wall s"],
            [
                [
                    "baseline (REST lists + GET /users)",
                    b["units"]["total"],
                    b["units"]["core"],
                    b["units"]["graphql"],
                    b["requests"],
                    b["users"],
                    b["links"],
                    b["units_per_user"],
                    b["seconds"],
                ],
                [
                    "product (client + collector, staged)",
                    p["units"]["total"],
                    p["units"]["core"],
                    p["units"]["graphql"],
                    p["requests"],
                    p["profiled"],
                    p["links"],
                    p["units_per_user"],
                    p["seconds"],
                ],
            ],
        ),
        f"  baseline / product: {q['ratio_baseline_over_product']}x fewer units per user; "
        f"{p['batches']} batch(es) of <= 50 repositories, {p['steps']} staged steps",
    ]
    out.append(
        f"  at GitHub's 5,000 units per hour and token: baseline {b['units']['total'] / 5000:.1f} token-hours, "
        f"product {p['units']['total'] / 5000:.2f}"
    )
    pk = p["graphql_packing"]
    out.append(
        f"  GraphQL queries: {pk['queries']} (1 point each); connection pages per query, mean "
        f"{pk['mean_pages_per_query']}: " + ", ".join(f"{k} {v}" for k, v in pk["by_pages"].items())
    )
    goals.append(
        (
            "product units per user (with profile)",
            f"<= {GOALS['units_per_user']}",
            p["units_per_user"],
            p["units_per_user"] <= GOALS["units_per_user"],
        )
    )
    goals.append(
        (
            "times better than the baseline",
            f">= {GOALS['ratio_vs_baseline']}x",
            f"{q['ratio_baseline_over_product']}x",
            q["ratio_baseline_over_product"] >= GOALS["ratio_vs_baseline"],
        )
    )

    inc = q["incremental_unchanged"]
    rows = [
        [
            "unchanged repositories (all profiles fresh)",
            "-",
            "-",
            inc["units"]["total"],
            inc["units"]["core"],
            inc["units"]["graphql"],
            inc["requests"],
            inc["units_per_repo"],
            "-",
        ]
    ]
    for key, label in (
        ("incremental_forkers_1pct", "+~1% fork owners"),
        ("incremental_contributors_1pct", "+~1% contributors"),
    ):
        c = q[key]
        rows.append(
            [
                label,
                c["added"],
                f"{c['change_share']:.1%}",
                c["units"]["total"],
                c["units"]["core"],
                c["units"]["graphql"],
                c["requests"],
                round(c["units"]["total"] / q["dataset_repos"], 4),
                c["units_per_added"],
            ]
        )
    out += [
        "",
        "2. Incremental cost (previous = the last run's repository records)",
        table(
            ["run", "added", "of list", "units", "core", "graphql", "requests", "units/repo", "units/added"],
            rows,
        ),
    ]
    bf = q["backfill"]
    out.append(
        f"  backfill of {bf['dates']} dates: full {p['units']['total']} + {bf['dates']} incremental runs "
        f"{bf['units_incremental_runs']} = {bf['actual_total']} units; one full + {bf['dates']} x the unchanged check = "
        f"{bf['expected_total']} (ratio {bf['actual_over_expected']}); {bf['times_cheaper_than_full_runs']}x cheaper than "
        f"{bf['dates'] + 1} full collections; {bf['seconds']} s for the {bf['dates']} runs"
    )
    goals.append(
        (
            f"backfill of {bf['dates']} dates, units",
            f"<= full + {bf['dates']} x check = {bf['expected_total']}",
            bf["actual_total"],
            bf["actual_total"] <= bf["expected_total"],
        )
    )
    goals.append(
        (
            "units per repository, unchanged",
            f"<= {GOALS['units_per_repo_unchanged']}",
            inc["units_per_repo"],
            inc["units_per_repo"] <= GOALS["units_per_repo_unchanged"],
        )
    )
    daily = q.get("daily_unchanged_with_relisting")
    if daily:
        out.append(
            f"  {daily['relist_days']} daily runs on unchanged repositories, each re-listed in full on one of "
            f"the days: units per day {daily['units_per_day']}, {daily['units_per_repo_per_day']} per repository "
            "and day"
        )
        goals.append(
            (
                f"units per repository and day, unchanged, re-listed every {daily['relist_days']} days",
                f"<= {GOALS['units_per_repo_unchanged']}",
                daily["units_per_repo_per_day"],
                daily["units_per_repo_per_day"] <= GOALS["units_per_repo_unchanged"],
            )
        )
    return "\n".join(out)


def render_e2e(runs: list[dict]) -> str:
    out = [
        "3. End to end: airflow dags test github_repo_users (tasks run one after another, in one process; "
        "slots = mapped fetch slots, batches = batches of 50 repositories the slots claimed)"
    ]
    rows = []
    for e in runs:
        d = e["dags_test"]
        rows.append(
            [
                e["label"],
                e["repos"],
                d["rows"]["github_user"],
                d["slots"],
                d["batches"],
                e["complete"],
                d["wall_s"],
                d["cli_startup_s"],
                d["our_execute_s"],
                d["airflow_overhead_s"],
                f"{d['airflow_share']:.0%}",
                d["units"]["core"],
                d["units"]["graphql"],
                round(d["units"]["total"] / max(1, e["repos"]), 3),
                round(d["units"]["total"] / max(1, d["rows"]["github_user"]), 4),
                d["peak_rss_mb"],
                round((d["redis_used_before_commit_mb"] or 0) - (d["redis_used_before_mb"] or 0), 1),
            ]
        )
    out.append(
        table(
            [
                "scale",
                "repos",
                "users",
                "slots",
                "batches",
                "complete",
                "wall s",
                "startup s",
                "our execute s",
                "airflow s",
                "airflow",
                "core",
                "graphql",
                "units/repo",
                "units/user",
                "dags test RSS MB",
                "Redis staged MB",
            ],
            rows,
        )
    )
    for e in runs:
        d = e["dags_test"]
        rep = e.get("replay")
        rows = []
        for name, key in (
            ("plan", "plan"),
            ("collect.quota_gate", "gate"),
            ("collect.fetch", "fetch"),
            ("commit", "commit"),
        ):
            t = d["tasks"].get(name)
            if not t:
                continue
            own = (rep or {}).get(key) or {}
            rows.append(
                [
                    name,
                    t["n"],
                    t["task_s"],
                    t["execute_s"],
                    t["airflow_s"],
                    t["per_task_airflow_s"],
                    t["peak_rss_mb"],
                    own.get("peak_rss_mb"),
                    own.get("seconds"),
                ]
            )
        out += [
            "",
            f"  [{e['label']}] per task type (in-process RSS: the dags test process while that task ran; "
            "own process: the task alone in a process, as an executor runs it, VmHWM; own s: the longest one)",
            table(
                [
                    "task",
                    "n",
                    "task s",
                    "execute s",
                    "airflow s",
                    "airflow s/task",
                    "in-process RSS MB",
                    "own process RSS MB",
                    "own s",
                ],
                rows,
                indent="    ",
            ),
            f"    dags test: {d['slots_with_batches']} of {d['slots']} fetch slots took the {d['batches']} "
            f"batch(es) (tasks run one at a time, so the first slot takes them all), "
            f"{d['gates_skipped']} quota gate(s) skipped",
        ]
        redis_line = (
            f"    Redis used_memory: before {d['redis_used_before_mb']} MB, peak {d['redis_used_peak_mb']} MB, "
            f"at commit start (peak staging) {d['redis_used_before_commit_mb']} MB, after {d['redis_used_after_mb']} MB"
        )
        out.append(redis_line)
        if rep:
            f = rep["fetch"]
            out.append(
                f"    replay, {rep['gate']['n']} slots at once: {f['with_batches']} fetch slots took the "
                f"{f['batches']} batch(es) in {f['wall_s']} s ({f['seconds_total']} s summed over slots); "
                f"our Redis keys: before fetch {rep['redis_own_mb']['before_fetch']} MB, at peak staging "
                f"{rep['redis_own_mb']['before_commit']} MB, after commit {rep['redis_own_mb']['after_commit']} MB"
            )
        out.append(f"    airflow db migrate (once per home, not in wall): {e['airflow_db_migrate_s']} s")
    return "\n".join(out)


def render_commit(rows_in: list[dict], goals: list) -> str:
    from github_collector import settings

    repeat = max(c.get("repeat", 1) for c in rows_in)

    def rate(x: dict) -> str:
        lo, hi = x.get("records_per_s_range", [x["records_per_s"]] * 2)
        return f"{x['records_per_s']:,}" + (f" ({lo:,}-{hi:,})" if repeat > 1 else "")

    rows = []
    for c in rows_in:
        i, u = c["insert"], c["upsert"]
        rows.append(
            [
                c["staged"],
                i["users"],
                i["links"],
                i["staged_redis_mb"],
                i["commit_s"],
                rate(i),
                i["rss_before_mb"],
                i.get("peak_rss_mb_max", i["peak_rss_mb"]),
                u["commit_s"],
                rate(u),
                u.get("peak_rss_mb_max", u["peak_rss_mb"]),
            ]
        )
    runs = f"; median of {repeat} runs (range), highest peak RSS" if repeat > 1 else ""
    out = [
        "4. Commit throughput: run_tasks.commit_run in its own process (chunks of up to "
        f"{settings.commit_chunk():,}, {settings.commit_workers()} Postgres connections; COPY + upsert per "
        f"chunk; tables created before timing{runs})",
        table(
            [
                "staged records",
                "users",
                "links",
                "Redis MB",
                "insert s",
                "records/s",
                "RSS before MB",
                "peak RSS MB",
                "re-commit s",
                "records/s",
                "peak RSS MB",
            ],
            rows,
        ),
    ]
    worst = min(min(c["insert"]["records_per_s"], c["upsert"]["records_per_s"]) for c in rows_in)
    peak = max(
        max(
            c["insert"].get("peak_rss_mb_max", c["insert"]["peak_rss_mb"]),
            c["upsert"].get("peak_rss_mb_max", c["upsert"]["peak_rss_mb"]),
        )
        for c in rows_in
    )
    goals.append(
        (
            "commit records/s (slowest size" + (", median" if repeat > 1 else "") + ")",
            f">= {GOALS['commit_rows_per_s']:,}",
            worst,
            worst >= GOALS["commit_rows_per_s"],
        )
    )
    goals.append(
        (
            "commit peak RSS (largest size)",
            f"< {GOALS['commit_rss_mb']} MB",
            peak,
            peak < GOALS["commit_rss_mb"],
        )
    )
    return "\n".join(out)


def render_profile(p: dict) -> str:
    out = ["5. Profile (cProfile; self time grouped by who spends it; cProfile slows Python-heavy parts)"]

    def section(title: str, s: dict) -> None:
        cats = ", ".join(f"{k} {v['share']:.0%}" for k, v in s["by_category"].items() if v["share"] >= 0.01)
        out.append(f"  {title}: {s['profiled_s']} s profiled: {cats}")
        out.append(
            table(
                ["our function (by cumulative)", "calls", "self s", "cumulative s", "of profile"],
                [
                    [r["function"], r["calls"], r["self_s"], r["cumulative_s"], f"{r['cum_share']:.0%}"]
                    for r in s["ours_by_cumulative"]
                ],
                indent="    ",
            )
        )

    for f in p["fetch"]:
        section(
            f"fetch path, {f['label']} ({f['repos']:,} repos, {f['requests']:,} requests, {f['steps']:,} staged "
            f"steps; wall {f['wall_s']} s, this process's CPU {f['cpu_s']} s)",
            f,
        )
    section(f"commit of {p['commit']['records']:,} records (wall {p['commit']['wall_s']} s)", p["commit"])
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="small dataset and scale, commit of 10k only (~2 min)"
    )
    ap.add_argument(
        "--scales",
        default=None,
        help="end-to-end runs with this many small repositories (default 1000,10000; --quick 300; '' for none)",
    )
    ap.add_argument(
        "--commit-sizes",
        default=None,
        help="staged records per commit measurement (default 10000,100000,1000000; --quick 10000)",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="measure each commit size this many times; report the median"
    )
    ap.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}"
    )
    ap.add_argument(
        "--output", help="JSON file (default bench/results.json, bench/results-quick.json with --quick)"
    )
    args = ap.parse_args(argv)
    sections = [s for s in args.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")
    default_scales, default_sizes = (
        (QUICK_SCALES, QUICK_COMMIT_SIZES) if args.quick else (SCALES, COMMIT_SIZES)
    )
    scales = _ints(args.scales, default_scales)
    commit_sizes = _ints(args.commit_sizes, default_sizes)
    spec = QUICK_SPEC if args.quick else MAIN_SPEC

    results: dict = {
        "mode": "quick" if args.quick else "default",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "commit": _git_head(),
        "goals": GOALS,
    }
    out_path = Path(args.output or ROOT / "bench" / ("results-quick.json" if args.quick else "results.json"))

    def save() -> None:
        out_path.write_text(json.dumps(results, indent=2, default=str) + "\n")

    t0 = time.perf_counter()
    load = LoadSampler().start()  # the machine is shared: say how busy it was
    if "quota" in sections:
        import quota_bench

        results["quota"] = quota_bench.run(spec)
        save()
    if "authors" in sections:
        import authors_bench

        results["authors"] = authors_bench.run(QUICK_AUTHORS_SPEC if args.quick else AUTHORS_SPEC)
        save()
    if "e2e" in sections:
        import e2e_bench

        runs = [e2e_bench.run(spec, "quick" if args.quick else f"{spec['n_repos']} repos")]
        for n in scales:
            runs.append(e2e_bench.run(scale_spec(n), f"{n:,} small repos"))
        results["e2e"] = runs
        save()
    if "commit" in sections:
        import commit_bench

        results["commit_throughput"] = commit_bench.run(commit_sizes, repeat=max(1, args.repeat))
        save()
    if "profile" in sections:
        import profile_bench

        fetch_specs = [("quick" if args.quick else f"{spec['n_repos']} repos", spec)] + (
            [(f"{max(scales):,} small repos", scale_spec(max(scales)))] if scales else []
        )
        results["profile"] = profile_bench.run(fetch_specs, 10_000 if args.quick else 100_000)
        save()
    if "quota_bound" in sections:
        import quota_bound

        results["quota_bound"] = quota_bound.run(airflow_ways=not args.quick)
        save()
    results["total_s"] = round(time.perf_counter() - t0, 1)
    results["machine"]["load_average_1m"] = load.stop()

    goals: list = []
    la = results["machine"]["load_average_1m"]
    parts = [
        f"github-repo-users benchmark ({results['mode']}; {os.cpu_count()} CPUs; dataset {spec}; "
        f"units = quota units charged by the emulator)\n"
        f"run time {results['total_s']:.0f} s; 1-minute load average during the run: mean {la['mean']}, "
        f"min {la['min']}, max {la['max']}"
    ]
    if "quota" in results:
        parts.append(render_quota(results["quota"], goals))
    if "authors" in results:
        import authors_bench

        parts.append(
            authors_bench.render(
                results["authors"],
                table,
                goals,
                GOALS["author_units_per_user"],
                GOALS["units_per_repo_unchanged"],
            )
        )
    if "e2e" in results:
        parts.append(render_e2e(results["e2e"]))
    if "commit_throughput" in results:
        parts.append(render_commit(results["commit_throughput"], goals))
    if "profile" in results:
        parts.append(render_profile(results["profile"]))
    if "quota_bound" in results:
        import quota_bound

        parts.append(quota_bound.render(results["quota_bound"], table))
        goals.extend(quota_bound.goal_rows(results["quota_bound"]))
    if goals:
        parts.append(
            "Goals\n"
            + table(
                ["goal", "target", "measured", "verdict"], [[g, t, m, verdict(ok)] for g, t, m, ok in goals]
            )
        )
        results["goal_verdicts"] = [
            {"goal": g, "target": t, "measured": m, "met": ok} for g, t, m, ok in goals
        ]
    text = "\n\n".join(parts)
    results["table"] = text
    save()
    print(text)
    say(f"done in {results['total_s']} s; results in {out_path}")
    return 0


class LoadSampler:
    """The 1-minute load average every 10 s, in a thread, for the whole run."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.values.append(os.getloadavg()[0])
            if self._stop.wait(10):
                return

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        v = self.values or [os.getloadavg()[0]]
        return {"mean": round(sum(v) / len(v), 2), "min": round(min(v), 2), "max": round(max(v), 2)}


def _ints(raw: str | None, default: list[int]) -> list[int]:
    return default if raw is None else [int(x) for x in raw.split(",") if x.strip()]


def _git_head() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
