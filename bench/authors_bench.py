"""Quota of the author relations (issues, pull requests, discussions): units per user with a
profile for each, and an incremental day on unchanged repositories with every relation on.

A dataset of its own: the main one plus a few repositories of 10,000+ issues and pull
requests (DatasetSpec.big_item_repos), the heavy tail the pages of 100 must get through.
Figures are the units the emulator charged, as in quota_bench.
"""

from __future__ import annotations

from common import Emulator, bench_redis, say
from quota_bench import previous_from, product_run

AUTHOR_RELATIONS = ["issue_authors", "pull_request_authors", "discussion_authors"]
EVERY_RELATION = ["contributors", "forkers", "stargazers", "watchers", *AUTHOR_RELATIONS]
CHANGE_SHARE = 0.01


def run(spec: dict) -> dict:
    out: dict = {"dataset": spec}
    with Emulator(spec) as emu:
        repos = emu.repos
        n = len(repos)
        out["dataset_repos"] = n
        with bench_redis("authors") as r:
            per: dict[str, dict] = {}
            for rel in AUTHOR_RELATIONS:
                say(f"authors: full collection of {rel}")
                full = product_run(emu, r, repos, relations=[rel])
                per[rel] = {
                    "units": full["units"]["total"],
                    "profiled": full["profiled"],
                    "links": full["links"],
                    "units_per_user": round(full["units"]["total"] / max(1, full["profiled"]), 5),
                }
            out["per_relation"] = per

            say("authors: full collection with every relation")
            full = product_run(emu, r, repos, relations=EVERY_RELATION)
            out["all_relations_full"] = {
                "units": full["units"],
                "profiled": full["profiled"],
                "units_per_user": round(full["units"]["total"] / max(1, full["profiled"]), 5),
            }
            statuses: dict[str, int] = {}
            for rec in full["repo_records"].values():
                for rel, st in (rec.get("relation_status") or {}).items():
                    if rel in AUTHOR_RELATIONS:
                        statuses[st] = statuses.get(st, 0) + 1
            out["author_statuses"] = statuses

            say("authors: an incremental day on unchanged repositories, every relation on")
            prev = previous_from(full["repo_records"])
            inc = product_run(emu, r, repos, prev, fresh=set, relations=EVERY_RELATION)
            out["incremental_unchanged_all"] = {
                "units": inc["units"],
                "requests": inc["requests"],
                "units_per_repo": round(inc["units"]["total"] / n, 4),
            }

            # ~1% new pull requests and issues, in proportion to each repository's lists.
            added = 0
            for name, rec in full["repo_records"].items():
                if rec.get("status") != "ok":
                    continue
                for rel in ("pull_request_authors", "issue_authors"):
                    if (rec.get("relation_status") or {}).get(rel) != "ok":
                        continue
                    size = ((rec.get("relation_state") or {}).get(rel) or {}).get("count") or 0
                    k = round(size * CHANGE_SHARE)
                    if k:
                        emu.mutate("add_items", full_name=name, relation=rel, n=k)
                        added += k
            say(f"authors: incremental day after {added} new issues and pull requests")
            prev = previous_from(inc["repo_records"], prev)
            known = set(full["user_ids"])
            changed = product_run(
                emu,
                r,
                repos,
                prev,
                fresh=lambda ids: {i for i in ids if i in known},
                relations=EVERY_RELATION,
            )
            out["incremental_items_1pct"] = {
                "added": added,
                "units": changed["units"],
                "units_per_repo": round(changed["units"]["total"] / n, 4),
                "units_per_added": round(changed["units"]["total"] / max(1, added), 4),
            }
    return out


def render(a: dict, table, goals: list, goal_user: float, goal_repo: float) -> str:
    rows = [[rel, v["units"], v["profiled"], v["units_per_user"]] for rel, v in a["per_relation"].items()]
    full = a["all_relations_full"]
    rows.append(["all seven relations", full["units"]["total"], full["profiled"], full["units_per_user"]])
    inc, ch = a["incremental_unchanged_all"], a["incremental_items_1pct"]
    out = [
        f"Author relations: {a['dataset_repos']} repositories, a few with 10k+ issues and pull requests "
        f"(dataset {a['dataset']})",
        table(["full collection", "units", "users w/ profile", "units/user"], rows),
        f"  author relations recorded: {a['author_statuses']}",
        table(
            ["incremental day, every relation on", "units", "units/repo"],
            [
                ["unchanged repositories", inc["units"]["total"], inc["units_per_repo"]],
                [
                    f"+~1% issues and pull requests ({ch['added']} items)",
                    ch["units"]["total"],
                    ch["units_per_repo"],
                ],
            ],
        ),
    ]
    for rel, v in a["per_relation"].items():
        goals.append(
            (
                f"{rel}: units per user (with profile)",
                f"<= {goal_user}",
                v["units_per_user"],
                v["units_per_user"] <= goal_user,
            )
        )
    goals.append(
        (
            "incremental day, unchanged, every relation on: units per repository",
            f"<= {goal_repo}",
            inc["units_per_repo"],
            inc["units_per_repo"] <= goal_repo,
        )
    )
    return "\n".join(out)
