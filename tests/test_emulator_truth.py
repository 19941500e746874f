"""ds.truth() must describe exactly what a careful REST crawl can collect."""

from __future__ import annotations

import pytest
from fixtures_emulator import *  # noqa: F403
from fixtures_emulator import EMU_TOKEN_COLLAB, EMU_TOKEN_PLAIN

from github_emulator import DatasetSpec, build_dataset

pytestmark = pytest.mark.integration

# 403 here is a terms-of-service block (with a block object); 451 a DMCA one
STATUS = {200: "ok", 403: "blocked", 404: "not_found", 451: "blocked"}


def crawl(base: str, session, url: str, accept: str | None = None) -> tuple[int, list]:
    items, status = [], None
    headers = {"Accept": accept} if accept else {}
    while url:
        r = session.get(url, headers=headers)
        status = r.status_code
        if status != 200:
            return status, items
        items += r.json()
        url = r.links.get("next", {}).get("url")
    return status, items


@pytest.mark.parametrize(("token", "name"), [(EMU_TOKEN_COLLAB, "collab"), (EMU_TOKEN_PLAIN, "plain")])
def test_truth_matches_a_rest_crawl(emu_server_factory, emu_client, token: str, name: str) -> None:
    ds = build_dataset(DatasetSpec(seed=11, n_repos=6, n_users=250, max_per_repo=150))
    srv = emu_server_factory(dataset=ds)
    s = emu_client(token)
    truth = ds.truth(token_name=name)
    repos, repo_users, user_ids = {}, {}, set()

    def tie(repo_id: int, uid: int, relation: str, **fields) -> None:
        entry = repo_users.setdefault(
            (repo_id, uid), {"relations": set(), "contributions": None, "starred_at": None}
        )
        entry["relations"].add(relation)
        entry.update(fields)
        user_ids.add(uid)

    for requested in ds.repo_names():
        r = s.get(f"{srv.url}/repos/{requested}", allow_redirects=False)
        status = "moved" if r.status_code == 301 else STATUS[r.status_code]
        if r.status_code == 301:
            r = s.get(r.headers["location"])
        if r.status_code != 200:
            repos[requested] = {"repo_id": None, "full_name": None, "status": status, "restricted": []}
            continue
        repo = r.json()
        base = f"{srv.url}/repositories/{repo['id']}"
        restricted = []
        code, contributors = crawl(srv.url, s, f"{base}/contributors?per_page=100")
        if code == 204:
            status = "empty"
        elif code == 403:
            status = "too_large"
        for c in contributors:
            tie(repo["id"], c["id"], "contributors", contributions=c["contributions"])
        _, forks = crawl(srv.url, s, f"{base}/forks?per_page=100")
        for f in forks:
            tie(repo["id"], f["owner"]["id"], "forkers")
        code, stars = crawl(srv.url, s, f"{base}/stargazers?per_page=100", "application/vnd.github.star+json")
        # a restricted list never counts as empty: stargazers_count tells them apart
        if code != 200 or (not stars and repo["stargazers_count"]):
            restricted.append("stargazers")
        for st in stars:
            tie(repo["id"], st["user"]["id"], "stargazers", starred_at=st["starred_at"])
        code, watchers = crawl(srv.url, s, f"{base}/subscribers?per_page=100")
        if code != 200 or (not watchers and repo["subscribers_count"]):
            restricted.append("watchers")
        for w in watchers:
            tie(repo["id"], w["id"], "watchers")
        repos[requested] = {
            "repo_id": repo["id"],
            "full_name": repo["full_name"],
            "status": status,
            "restricted": restricted,
        }

    assert repos == truth["repos"]
    assert repo_users == truth["repo_users"]
    answers = {uid: s.get(f"{srv.url}/user/{uid}") for uid in sorted(user_ids)}
    # A deleted account is still named by the contributor lists, but its profile is gone.
    assert sorted(uid for uid, r in answers.items() if r.status_code == 404) == truth["gone"]
    assert truth["gone"], "the dataset has deleted accounts among the contributors"
    users = {uid: r.json() for uid, r in answers.items() if r.status_code == 200}
    assert users == {uid: p for uid, p in truth["users"].items() if uid not in truth["gone"]}
    if name == "plain":
        # every list with members is hidden from a non-collaborator; empty lists have nothing to hide
        for requested, r in repos.items():
            if r["repo_id"] is not None:
                repo = ds.repos[r["repo_id"]]
                expected = [
                    rel
                    for rel, members in (("stargazers", repo.stars), ("watchers", repo.watchers))
                    if members
                ]
                assert r["restricted"] == expected, requested
        assert sum(bool(r["restricted"]) for r in repos.values()) >= 6
