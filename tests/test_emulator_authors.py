"""Issues, pull requests and discussions in the emulator: authors as GitHub shows them."""

from __future__ import annotations

import graphql
import pytest
import requests
from conftest import github_schema_real
from fixtures_emulator import *  # noqa: F403
from fixtures_emulator import EMU_TOKEN_PLAIN

from github_emulator import AUTHOR_RELATIONS, build_dataset
from github_emulator.data import AUTHORED_ITEMS, GHOST, DatasetSpec
from github_emulator.encoding import iso

pytestmark = pytest.mark.integration

ITEMS = """query($owner: String!, $name: String!, $after: String, $dir: OrderDirection!) {
  repository(owner: $owner, name: $name) {
    hasIssuesEnabled hasDiscussionsEnabled
    issues(first: 100, after: $after, orderBy: {field: CREATED_AT, direction: $dir}) {
      totalCount pageInfo { hasNextPage endCursor }
      nodes { number createdAt author { __typename login ... on User { databaseId name }
                                        ... on Bot { databaseId } ... on Mannequin { databaseId } } } }
    pullRequests(first: 100, after: $after, orderBy: {field: CREATED_AT, direction: $dir}) {
      totalCount nodes { number createdAt author { __typename login } } }
    discussions(first: 100, after: $after, orderBy: {field: CREATED_AT, direction: $dir}) {
      totalCount nodes { number createdAt author { __typename login } } }
  }
}"""
FIELD = {
    "issue_authors": "issues",
    "pull_request_authors": "pullRequests",
    "discussion_authors": "discussions",
}


def post(srv, session: requests.Session, **variables) -> dict:
    r = session.post(f"{srv.url}/graphql", json={"query": ITEMS, "variables": variables})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "errors" not in body, body["errors"]
    return body["data"]["repository"]


def test_the_query_is_valid_on_githubs_schema() -> None:
    assert graphql.validate(github_schema_real(), graphql.parse(ITEMS)) == []


def _odd_repo(ds):
    """A repository with ghost, bot and mannequin authors among its issues and pull requests."""
    for name in ds.repo_names():
        repo, _ = ds.lookup_full_name(name)
        if repo is None or not repo.has_issues:
            continue
        authors = {a for _, _, a in repo.issues + repo.pulls}
        if GHOST in authors and authors & set(ds.mannequins) and authors & set(ds.bot_ids):
            return repo
    raise AssertionError("the dataset has no repository with every kind of odd author")


def test_authors_come_as_github_shows_them(emu_server, emu_dataset) -> None:
    ds = emu_dataset
    repo = _odd_repo(ds)
    owner, name = ds.full_name(repo).split("/")
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {EMU_TOKEN_PLAIN}"  # no rights: still public
    seen: dict[str, list[tuple[int, str, dict | None]]] = {"issues": [], "pullRequests": []}
    after = None
    while True:
        repo_data = post(emu_server, s, owner=owner, name=name, after=after, dir="ASC")
        for f in seen:
            seen[f] += [(n["number"], n["createdAt"], n["author"]) for n in repo_data[f]["nodes"]]
        info = repo_data["issues"]["pageInfo"]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert repo_data["issues"]["totalCount"] == len(repo.issues)
    got = seen["issues"]
    assert [(n, t) for n, t, _ in got] == [(n, iso(t)) for t, n, _ in repo.issues]
    for (_, _, author), (_, _, uid) in zip(got, repo.issues, strict=True):
        if uid == GHOST:
            assert author is None
        elif uid in ds.mannequins:
            assert author == {"__typename": "Mannequin", "login": ds.mannequins[uid], "databaseId": uid}
        elif uid in ds.bot_ids:
            assert author == {"__typename": "Bot", "login": ds.login(uid), "databaseId": uid}
        else:
            assert author["__typename"] == "User" and author["databaseId"] == uid
    kinds = {(a or {}).get("__typename") for _, _, a in seen["issues"] + seen["pullRequests"]}
    assert kinds >= {None, "User", "Bot", "Mannequin"}


def test_newest_first_and_disabled_features(emu_server_factory) -> None:
    ds = build_dataset(DatasetSpec(n_repos=6, n_users=300, max_per_repo=200, special_repos=False))
    name = ds.repo_names()[0]
    repo, _ = ds.lookup_full_name(name)
    ds.set_features(name, issues=True, discussions=True)
    ds.add_items(name, "discussion_authors", 3)
    srv = emu_server_factory(dataset=ds)
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {EMU_TOKEN_PLAIN}"
    owner, short = name.split("/")
    data = post(srv, s, owner=owner, name=short, after=None, dir="DESC")
    for rel, f in FIELD.items():
        items = ds.items(repo, rel)
        want = [n for _, n, _ in sorted(items, reverse=True)][:100]
        assert [n["number"] for n in data[f]["nodes"]] == want
        assert data[f]["totalCount"] == len(items)
    ds.set_features(name, issues=False, discussions=False)
    data = post(srv, s, owner=owner, name=short, after=None, dir="DESC")
    assert (data["hasIssuesEnabled"], data["hasDiscussionsEnabled"]) == (False, False)
    assert data["issues"] == {
        "totalCount": 0,
        "pageInfo": {"hasNextPage": False, "endCursor": None},
        "nodes": [],
    }
    assert data["discussions"]["totalCount"] == 0 and data["pullRequests"]["totalCount"] == len(repo.pulls)
    truth = ds.truth(relations=AUTHOR_RELATIONS, repos=[name])
    assert truth["repos"][name]["not_applicable"] == ["issue_authors", "discussion_authors"]
    assert all(set(v["authored"]) == {"pull_request_authors"} for v in truth["repo_users"].values())


def test_truth_counts_items_per_author() -> None:
    ds = build_dataset(DatasetSpec(n_repos=6, n_users=300, max_per_repo=200, special_repos=False))
    name = ds.repo_names()[0]
    repo, _ = ds.lookup_full_name(name)
    ds.set_features(name, issues=True)
    before = len(repo.issues)
    authors = ds.add_items(name, "issue_authors", 6, ghosts=2, bots=1, same_second=True)
    assert len(repo.issues) == before + 6 and authors.count(GHOST) == 2
    truth = ds.truth(relations=["issue_authors"], repos=[name])
    ghosts = sum(1 for _, _, a in repo.issues if a == GHOST)
    assert truth["repos"][name]["authorless"]["issue_authors"]["ghost"] == ghosts
    for (rid, uid), entry in truth["repo_users"].items():
        mine = [t for t, _, a in getattr(repo, AUTHORED_ITEMS["issue_authors"]) if a == uid]
        assert rid == repo.id and entry["authored"]["issue_authors"] == {
            "items": len(mine),
            "first": iso(min(mine)),
            "last": iso(max(mine)),
        }
    assert (repo.id, GHOST) not in truth["repo_users"]
