"""Helpers shared by the integration tests: an in-memory sink and a ground-truth comparison."""

from __future__ import annotations

import time

from github_collector.client import GitHubClient
from github_collector.collector import Step
from github_collector.etag_cache import EtagCache
from github_collector.quota import QuotaStore
from github_collector.records import RELATION_ROLE, USER_FIELDS, user_from_rest


class MemorySink:
    """Keeps what a real staging area keeps: full profiles win over list items."""

    def __init__(self) -> None:
        self.users: dict[int, dict] = {}
        self.links: dict[tuple[int, int, str], dict] = {}
        self.items: dict[tuple[int, str, int], dict] = {}  # authored items: (repo, role, number)
        self.repos: dict[str, dict] = {}
        self.steps = 0
        self.states: list[dict] = []

    def write(self, step: Step) -> None:
        import copy

        self.steps += 1
        for u in step.users:
            if u.get("profile_complete") or u.get("gone") or u["user_id"] not in self.users:
                self.users[u["user_id"]] = u
        for lk in step.links:
            if "number" in lk:
                self.items[(lk["repo_id"], lk["relation"], lk["number"])] = lk
            else:
                self.links[(lk["repo_id"], lk["user_id"], lk["relation"])] = lk
        for r in step.repos:
            self.repos[r["requested"]] = r
        self.states.append(copy.deepcopy(step.state))


def make_client(
    url: str, tokens: list[str], redis_client, prefix: str, reserve: int = 0, **kw
) -> GitHubClient:
    kw.setdefault("backoff_base", 0.01)
    return GitHubClient(
        url,
        tokens,
        QuotaStore(redis_client, prefix=prefix, reserve=reserve),
        EtagCache(redis_client, prefix=prefix),
        **kw,
    )


def expected_user(profile: dict, identity_only: bool = False) -> dict:
    """The stored row a profile must give; ``identity_only`` for an account GitHub serves no
    profile of (deleted, or an organisation enforcing SAML): only who it is."""
    if identity_only:
        profile = {k: profile[k] for k in ("id", "node_id", "login", "type")}
    rec = user_from_rest(profile)
    return {f: rec[f] for f in USER_FIELDS}


def diff_against_truth(truth: dict, users: dict[int, dict], links: dict, repos: dict[str, dict]) -> list[str]:
    """Every difference between collected records and the emulator's ground truth."""
    problems: list[str] = []
    pairs: dict[tuple[int, int], set[str]] = {}
    for rid, uid, role in links:
        pairs.setdefault((rid, uid), set()).add(role)
    want_pairs = {k: {RELATION_ROLE[r] for r in v["relations"]} for k, v in truth["repo_users"].items()}
    if pairs != want_pairs:
        missing = set(want_pairs) - set(pairs)
        extra = set(pairs) - set(want_pairs)
        wrong = [k for k in set(pairs) & set(want_pairs) if pairs[k] != want_pairs[k]]
        problems.append(
            f"pairs: {len(missing)} missing, {len(extra)} extra, {len(wrong)} with wrong relations"
        )
    for (rid, uid), v in truth["repo_users"].items():
        got = links.get((rid, uid, "contributor"))
        if got and got.get("contributions") != v["contributions"]:
            problems.append(
                f"contributions of {uid} in {rid}: {got.get('contributions')} != {v['contributions']}"
            )
        star = links.get((rid, uid, "stargazer"))
        if star and star.get("starred_at") != v["starred_at"]:
            problems.append(f"starred_at of {uid} in {rid}: {star.get('starred_at')} != {v['starred_at']}")
    unserved = {int(u) for u in (*truth.get("gone", ()), *truth.get("saml_orgs", ()))}
    want_users = {int(uid): expected_user(p, int(uid) in unserved) for uid, p in truth["users"].items()}
    if set(users) != set(want_users):
        problems.append(
            f"users: {len(set(want_users) - set(users))} missing, {len(set(users) - set(want_users))} extra"
        )
    for uid, want in want_users.items():
        got = users.get(uid)
        if got is None:
            continue
        for f in USER_FIELDS:
            if got.get(f) != want[f]:
                problems.append(f"user {uid} field {f}: {got.get(f)!r} != {want[f]!r}")
                break
    for name, want in truth["repos"].items():
        got = repos.get(name) or repos.get(name.lower())  # the plan stores names lower-cased
        if got is None:
            problems.append(f"repo {name} not reported")
            continue
        if (got["repo_id"], got["full_name"]) != (want["repo_id"], want["full_name"]):
            problems.append(
                f"repo {name}: id/name {got['repo_id']}/{got['full_name']} != {want['repo_id']}/{want['full_name']}"
            )
        status = {"empty": "ok", "too_large": "ok"}.get(want["status"], want["status"])
        if got["status"] != status:
            problems.append(f"repo {name}: status {got['status']} != {status}")
        if want["status"] in ("empty", "too_large") and got["relation_status"].get("contributors") not in (
            want["status"],
            None,
        ):
            problems.append(
                f"repo {name}: contributors {got['relation_status'].get('contributors')} != {want['status']}"
            )
        # A hidden list whose public count is 0 is truly empty, and may be recorded so.
        counts = {"stargazers": got["stargazer_count"], "watchers": got["watcher_count"]}
        hidden = {
            r for r in want["restricted"] if counts.get(r) != 0 or got["relation_status"].get(r) != "empty"
        }
        if not hidden <= set(got["unavailable_relations"]):
            problems.append(
                f"repo {name}: restricted {want['restricted']} not in {got['unavailable_relations']}"
            )
    return problems


def tally_items(items) -> tuple[dict, dict]:
    """What the loader derives from authored items: per (repo, user, role) the count and the
    first and last creation time, and per repository the items no user authored, by role and
    kind ("ghost" for a deleted account, else the author's type)."""
    tallies: dict[tuple[int, int, str], list] = {}
    authorless: dict[int, dict[str, dict[str, int]]] = {}
    for it in items:
        if it["author_id"] is None:
            kind = it["author_type"] or "ghost"
            per = authorless.setdefault(it["repo_id"], {}).setdefault(it["relation"], {})
            per[kind] = per.get(kind, 0) + 1
            continue
        t = tallies.setdefault(
            (it["repo_id"], it["author_id"], it["relation"]), [0, it["created_at"], it["created_at"]]
        )
        t[0] += 1
        t[1], t[2] = min(t[1], it["created_at"]), max(t[2], it["created_at"])
    return {k: tuple(v) for k, v in tallies.items()}, authorless


def diff_authored(truth: dict, tallies: dict, authorless: dict, repos: dict[str, dict]) -> list[str]:
    """Differences in the author relations: each pair's count, first and last item, the items
    no user authored, and relations recorded as not applicable."""
    problems: list[str] = []
    want: dict[tuple[int, int, str], tuple] = {}
    for (rid, uid), v in truth["repo_users"].items():
        for rel, a in (v.get("authored") or {}).items():
            want[(rid, uid, RELATION_ROLE[rel])] = (a["items"], a["first"], a["last"])
    if tallies != want:
        wrong = sorted(k for k in set(tallies) | set(want) if tallies.get(k) != want.get(k))
        problems.append(
            f"authored: {len(wrong)} pair(s) differ, e.g. {[(k, tallies.get(k), want.get(k)) for k in wrong[:3]]}"
        )
    for name, w in truth["repos"].items():
        if "authorless" not in w or w["repo_id"] is None:
            continue
        want_less = {RELATION_ROLE[r]: kinds for r, kinds in w["authorless"].items()}
        if (authorless.get(w["repo_id"]) or {}) != want_less:
            problems.append(f"repo {name}: authorless {authorless.get(w['repo_id'])} != {want_less}")
        got = repos.get(name) or repos.get(name.lower()) or {}
        na = sorted(r for r, st in (got.get("relation_status") or {}).items() if st == "not_applicable")
        if na != sorted(w["not_applicable"]):
            problems.append(f"repo {name}: not applicable {na} != {sorted(w['not_applicable'])}")
    return problems


def wait_until(pred, timeout: float = 10.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def listed_repo(ds, attr: str = "forks", at_least: int = 6) -> str:
    """The first ordinary repository with at least ``at_least`` items in ``attr``."""
    for name in ds.repo_names():
        repo, _ = ds.lookup_full_name(name)
        if repo is not None and repo.kind == "ok" and len(getattr(repo, attr)) >= at_least:
            return ds.full_name(repo)
    raise AssertionError(f"no repository with {at_least} {attr}")
