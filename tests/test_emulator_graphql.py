"""GraphQL endpoint of the emulator, over HTTP."""

from __future__ import annotations

import pytest
import requests
from fixtures_emulator import *  # noqa: F403
from fixtures_emulator import EMU_TOKEN_PLAIN, emu_tokens

from github_emulator import RENAMED_REPO_NEW_NAME, SPECIAL_REPOS, node_id
from github_emulator.encoding import iso

pytestmark = pytest.mark.integration

PROFILE = """login databaseId name company websiteUrl location bio twitterUsername createdAt updatedAt"""


def gql(srv, session: requests.Session, query: str, **variables) -> requests.Response:
    return session.post(f"{srv.url}/graphql", json={"query": query, "variables": variables})


def biggest(ds, attr: str, pred=lambda r: True):
    repos = [ds.lookup_full_name(n)[0] for n in ds.repo_names()]
    return max(
        (r for r in repos if r is not None and r.kind == "ok" and pred(r)),
        key=lambda r: len(getattr(r, attr)),
    )


def owner_name(ds, repo) -> dict:
    owner, name = ds.full_name(repo).split("/")
    return {"owner": owner, "name": name}


FORKS = """query($owner: String!, $name: String!, $after: String, $dir: OrderDirection = ASC) {
  repository(owner: $owner, name: $name) {
    forkCount
    forks(first: 100, after: $after, orderBy: {field: CREATED_AT, direction: $dir}) {
      totalCount pageInfo { hasNextPage hasPreviousPage endCursor startCursor }
      nodes { databaseId createdAt owner { __typename login
        ... on User { %s followers { totalCount } following { totalCount }
                      repositories(privacy: PUBLIC) { totalCount } }
        ... on Organization { databaseId name description websiteUrl location createdAt } } }
    }
  }
  rateLimit { cost remaining used limit nodeCount resetAt }
}""".replace("%s", PROFILE)


def test_forks_with_inline_owner_profiles(emu_server, emu_client, emu_dataset) -> None:
    ds = emu_dataset
    repo = biggest(
        ds,
        "forks",
        lambda r: (
            any(ds.user_type(ds.repos[f].owner_id) == "Organization" for _, f in r.forks)
            and not any(ds.repos[f].owner_id in ds.saml_orgs for _, f in r.forks[:100])
        ),
    )
    r = gql(emu_server, emu_client(), FORKS, **owner_name(ds, repo))
    assert r.status_code == 200 and "errors" not in r.json()
    data = r.json()["data"]
    forks = data["repository"]["forks"]
    # forkCount is the whole network (forks of forks too), the forks connection the direct forks
    assert forks["totalCount"] == len(repo.forks)
    assert data["repository"]["forkCount"] == ds.network_count(repo) > len(repo.forks)
    assert [n["databaseId"] for n in forks["nodes"]] == [f for _, f in repo.forks][:100]
    kinds = {n["owner"]["__typename"] for n in forks["nodes"]}
    assert "Organization" in kinds and "User" in kinds
    for node in forks["nodes"]:
        owner = node["owner"]
        rest = ds.truth(relations=("forkers",), collaborator_repos=("*",))["users"][
            ds.user_id(owner["login"])
        ]
        if owner["__typename"] == "User":
            assert owner["name"] == rest["name"] and owner["company"] == rest["company"]
            assert owner["location"] == rest["location"] and owner["bio"] == rest["bio"]
            assert owner["websiteUrl"] == (rest["blog"] or None)
            assert owner["twitterUsername"] == rest["twitter_username"]
            assert owner["createdAt"] == rest["created_at"] and owner["updatedAt"] == rest["updated_at"]
            assert owner["followers"]["totalCount"] == rest["followers"]
            assert owner["following"]["totalCount"] == rest["following"]
            assert owner["repositories"]["totalCount"] == rest["public_repos"]
        else:
            assert "followers" not in owner
            assert owner["description"] == rest["bio"] and owner["name"] == rest["name"]
    rate = data["rateLimit"]
    assert rate["cost"] == 1 and rate["used"] == 1 and rate["remaining"] == 4999
    assert rate["nodeCount"] == 100
    assert r.headers["x-ratelimit-resource"] == "graphql" and r.headers["x-ratelimit-used"] == "1"


def test_stargazers_starred_at_and_order(emu_server, emu_client, emu_dataset) -> None:
    ds = emu_dataset
    repo = biggest(ds, "stars")
    q = """query($owner: String!, $name: String!, $dir: OrderDirection!) { repository(owner: $owner, name: $name) {
             stargazerCount
             stargazers(first: 5, orderBy: {field: STARRED_AT, direction: $dir}) {
               totalCount edges { cursor starredAt node { databaseId id login } } } } }"""
    s = emu_client()
    asc = gql(emu_server, s, q, dir="ASC", **owner_name(ds, repo)).json()["data"]["repository"]
    assert asc["stargazerCount"] == asc["stargazers"]["totalCount"] == len(repo.stars)
    assert [(e["starredAt"], e["node"]["databaseId"]) for e in asc["stargazers"]["edges"]] == [
        (iso(t), u) for t, u in repo.stars[:5]
    ]
    assert asc["stargazers"]["edges"][0]["node"]["id"] == node_id("User", repo.stars[0][1])
    desc = gql(emu_server, s, q, dir="DESC", **owner_name(ds, repo)).json()["data"]["repository"]
    assert [e["node"]["databaseId"] for e in desc["stargazers"]["edges"]] == [
        u for _, u in repo.stars[::-1][:5]
    ]


def test_restricted_relations_have_no_edges_but_real_counts(emu_server, emu_client, emu_dataset) -> None:
    ds = emu_dataset
    repo = biggest(ds, "stars")
    q = """query($owner: String!, $name: String!) { repository(owner: $owner, name: $name) {
             stargazerCount viewerPermission
             stargazers(first: 10) { totalCount pageInfo { hasNextPage endCursor } edges { node { login } } }
             watchers(first: 10) { totalCount pageInfo { hasNextPage } nodes { login } } } }"""
    data = gql(emu_server, emu_client(EMU_TOKEN_PLAIN), q, **owner_name(ds, repo)).json()["data"][
        "repository"
    ]
    assert data["stargazerCount"] == len(repo.stars) > 0
    assert data["stargazers"] == {
        "totalCount": len(repo.stars),
        "pageInfo": {"hasNextPage": False, "endCursor": None},
        "edges": [],
    }
    assert data["watchers"]["nodes"] == [] and data["watchers"]["totalCount"] == len(repo.watchers)
    assert data["watchers"]["pageInfo"]["hasNextPage"] is False
    assert data["viewerPermission"] == "READ"
    full = gql(emu_server, emu_client(), q, **owner_name(ds, repo)).json()["data"]["repository"]
    assert len(full["stargazers"]["edges"]) == 10 and full["viewerPermission"] == "WRITE"


def test_nodes_by_id_with_unknown_ids(emu_server, emu_client, emu_dataset) -> None:
    ds = emu_dataset
    repo = biggest(ds, "stars")
    uid = repo.stars[0][1]
    bot = ds.user_id("renovate[bot]")
    ids = [
        node_id("User", uid),
        "U_kgDOnotreal",
        node_id("Bot", bot),
        node_id("Repository", repo.id),
        node_id("User", 999_999),
    ]
    q = """query($ids: [ID!]!) { nodes(ids: $ids) { __typename id
             ... on User { login name email } ... on Bot { login } ... on Repository { nameWithOwner } } }"""
    body = gql(emu_server, emu_client(), q, ids=ids).json()
    nodes = body["data"]["nodes"]
    assert [n and n["__typename"] for n in nodes] == ["User", None, "Bot", "Repository", None]
    assert nodes[0]["login"] == ds.login(uid) and nodes[2]["login"] == "renovate[bot]"
    assert nodes[0]["email"] == (ds.profile(uid)["email"] or "")  # "" when not public
    assert [(e["type"], e["path"]) for e in body["errors"]] == [
        ("NOT_FOUND", ["nodes", 1]),
        ("NOT_FOUND", ["nodes", 4]),
    ]
    assert "U_kgDOnotreal" in body["errors"][0]["message"]
    too_many = gql(emu_server, emu_client(), q, ids=[node_id("User", uid)] * 101).json()
    assert too_many["data"] is None and too_many["errors"]


def test_email_needs_a_scope(emu_server, emu_client, emu_dataset) -> None:
    q = '{ user(login: "%s") { login email } }' % emu_dataset.login(emu_dataset.viewer_id("x"))  # noqa: UP031
    r = gql(emu_server, emu_client(EMU_TOKEN_PLAIN), q)
    body = r.json()
    assert r.status_code == 200 and body["data"] is None
    assert body["errors"][0]["type"] == "INSUFFICIENT_SCOPES"
    assert (
        "The 'email' field requires one of the following scopes: ['user:email', 'read:user']"
        in body["errors"][0]["message"]
    )
    assert "['repo']" in body["errors"][0]["message"]
    assert emu_server.stats()["tokens"]["plain"]["graphql"]["used"] == 0
    ok = gql(emu_server, emu_client(), q).json()
    assert "errors" not in ok and isinstance(ok["data"]["user"]["email"], str)
    # without email the same token is fine
    assert "errors" not in gql(emu_server, emu_client(EMU_TOKEN_PLAIN), q.replace(" email", "")).json()


def test_rate_limited_when_exhausted(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(tokens=emu_tokens(graphql_limit=2))
    s = emu_client()
    q = "{ viewer { login } rateLimit { remaining used cost } }"
    assert gql(srv, s, q).json()["data"]["rateLimit"] == {"remaining": 1, "used": 1, "cost": 1}
    assert gql(srv, s, q).json()["data"]["rateLimit"] == {"remaining": 0, "used": 2, "cost": 1}
    r = gql(srv, s, q)
    assert r.status_code == 200 and "data" not in r.json()
    assert r.json()["errors"][0]["type"] == "RATE_LIMITED"
    assert r.json()["errors"][0]["message"].startswith("API rate limit already exceeded for user ID")
    assert r.headers["x-ratelimit-remaining"] == "0"
    # REST has its own budget
    assert s.get(f"{srv.url}/rate_limit").json()["resources"]["core"]["remaining"] == 5000


def test_dry_run_costs_nothing(emu_server, emu_client, emu_dataset) -> None:
    s = emu_client()
    r = gql(
        emu_server,
        s,
        FORKS.replace("rateLimit {", "rateLimit(dryRun: true) {"),
        **owner_name(emu_dataset, biggest(emu_dataset, "forks")),
    )
    assert r.json()["data"] == {
        "rateLimit": {**r.json()["data"]["rateLimit"], "cost": 1, "remaining": 5000, "used": 0}
    }
    assert emu_server.stats()["tokens"]["collab"]["graphql"]["used"] == 0


def test_cursors_are_stable_when_forks_are_added(emu_server_factory, emu_fresh_dataset, emu_client) -> None:
    ds = emu_fresh_dataset
    srv = emu_server_factory(dataset=ds)
    repo = biggest(ds, "forks")
    assert len(repo.forks) > 6
    s = emu_client()
    q = """query($owner: String!, $name: String!, $after: String, $dir: OrderDirection!) {
             repository(owner: $owner, name: $name) {
               forks(first: 4, after: $after, orderBy: {field: CREATED_AT, direction: $dir}) {
                 pageInfo { hasNextPage endCursor } nodes { databaseId } } } }"""

    def crawl(direction: str, mutate_after_first_page: bool) -> list[int]:
        seen, after = [], None
        while True:
            page = gql(srv, s, q, after=after, dir=direction, **owner_name(ds, repo)).json()
            forks = page["data"]["repository"]["forks"]
            seen += [n["databaseId"] for n in forks["nodes"]]
            if mutate_after_first_page and len(seen) == 4:
                ds.add_forks(ds.full_name(repo), 3)
            if not forks["pageInfo"]["hasNextPage"]:
                return seen
            after = forks["pageInfo"]["endCursor"]

    before = [f for _, f in repo.forks]
    asc = crawl("ASC", mutate_after_first_page=True)
    assert asc == [f for _, f in repo.forks]  # the 3 new forks arrive at the end, nothing repeats
    assert asc[: len(before)] == before and len(asc) == len(before) + 3
    desc_before = [f for _, f in reversed(repo.forks)]
    desc = crawl("DESC", mutate_after_first_page=True)
    # newest first: the next 3 forks land before the cursor and are not seen, nothing shifts
    assert desc == desc_before
    assert len(set(desc)) == len(desc)


def test_pagination_backwards(emu_server, emu_client, emu_dataset) -> None:
    ds = emu_dataset
    repo = biggest(ds, "stars")
    q = """query($owner: String!, $name: String!, $before: String) { repository(owner: $owner, name: $name) {
             stargazers(last: 3, before: $before) { pageInfo { hasPreviousPage hasNextPage startCursor }
               nodes { databaseId } } } }"""
    s = emu_client()
    page = gql(emu_server, s, q, **owner_name(ds, repo)).json()["data"]["repository"]["stargazers"]
    assert [n["databaseId"] for n in page["nodes"]] == [u for _, u in repo.stars[-3:]]
    assert page["pageInfo"]["hasPreviousPage"] and not page["pageInfo"]["hasNextPage"]
    prev = gql(emu_server, s, q, before=page["pageInfo"]["startCursor"], **owner_name(ds, repo)).json()
    assert [n["databaseId"] for n in prev["data"]["repository"]["stargazers"]["nodes"]] == [
        u for _, u in repo.stars[-6:-3]
    ]
    bad = gql(emu_server, s, q, before="bogus", **owner_name(ds, repo)).json()
    assert bad["errors"][0]["type"] == "INVALID_CURSOR_ARGUMENTS"


def test_renamed_missing_and_blocked_repositories(emu_server, emu_client) -> None:
    q = """query($o: String!, $n: String!, $follow: Boolean = true) {
             repository(owner: $o, name: $n, followRenames: $follow) { nameWithOwner databaseId } }"""
    s = emu_client()
    old_owner, old_name = SPECIAL_REPOS["renamed"].split("/")
    data = gql(emu_server, s, q, o=old_owner, n=old_name).json()
    assert data["data"]["repository"]["nameWithOwner"] == RENAMED_REPO_NEW_NAME
    nofollow = gql(emu_server, s, q, o=old_owner, n=old_name, follow=False).json()
    assert nofollow["data"]["repository"] is None and nofollow["errors"][0]["type"] == "NOT_FOUND"
    o, n = SPECIAL_REPOS["missing"].split("/")
    alias = gql(emu_server, s, '{ gone: repository(owner: "%s", name: "%s") { id } }' % (o, n)).json()  # noqa: UP031
    assert alias["data"] == {"gone": None}
    assert alias["errors"][0] == {
        "type": "NOT_FOUND",
        "path": ["gone"],
        "locations": [{"line": 1, "column": 3}],
        "message": f"Could not resolve to a Repository with the name '{o}/{n}'.",
    }
    answers = []
    for key in ("blocked", "tos"):  # DMCA and terms-of-service blocks look alike here
        o, n = SPECIAL_REPOS[key].split("/")
        blocked = gql(emu_server, s, q, o=o, n=n).json()
        assert blocked["data"]["repository"] is None
        assert (
            blocked["errors"][0]["type"] == "FORBIDDEN"
            and blocked["errors"][0]["message"] == "Repository access blocked"
        )
        answers.append(blocked)
    assert answers[0] == answers[1]
    o, n = SPECIAL_REPOS["empty"].split("/")
    empty = gql(
        emu_server,
        s,
        '{ repository(owner: "%s", name: "%s") { isEmpty forks(first: 5) { totalCount nodes { id } } } }'  # noqa: UP031
        % (o, n),
    ).json()
    assert empty["data"]["repository"] == {"isEmpty": True, "forks": {"totalCount": 0, "nodes": []}}


def test_refusals_cost_nothing(emu_server, emu_client) -> None:
    s = emu_client()
    r = gql(emu_server, s, '{ repository(owner: "a", name: "b") { noSuchField } }')
    assert r.status_code == 200 and "noSuchField" in r.json()["errors"][0]["message"]
    r = gql(emu_server, s, '{ repository(owner: "a", name: "b") { forks { nodes { id } } } }')
    assert r.json() == {
        "data": None,
        "errors": [
            {
                "type": "MISSING_PAGINATION_BOUNDARIES",
                "path": ["repository", "forks"],
                "message": "You must provide a `first` or `last` value to properly paginate the `forks` connection.",
            }
        ],
    }
    r = gql(
        emu_server, s, '{ repository(owner: "a", name: "b") { stargazers(first: 101) { nodes { id } } } }'
    )
    assert r.json()["errors"][0]["message"] == (
        "Requesting 101 records on the `stargazers` connection exceeds the `first` limit of 100 records."
    )
    r = gql(emu_server, s, "{ viewer { login ")
    assert r.status_code == 200 and r.json()["errors"]
    assert emu_server.stats()["tokens"]["collab"]["graphql"]["used"] == 0
    assert (
        requests.post(
            f"{emu_server.url}/graphql", json={"query": "{ viewer { login } }"}, timeout=10
        ).status_code
        == 401
    )


def test_slow_query_fault_still_costs(emu_server_factory, emu_client, emu_dataset) -> None:
    srv = emu_server_factory(graphql_timeout_nodes=50)
    repo = biggest(emu_dataset, "forks")
    r = gql(srv, emu_client(), FORKS, **owner_name(emu_dataset, repo))
    assert r.status_code == 502 and r.json()["data"] is None
    assert r.headers["x-ratelimit-used"] == "1"
    assert srv.stats()["tokens"]["collab"]["graphql"]["used"] == 1
    small = '{ repository(owner: "%s", name: "%s") { forks(first: 10) { nodes { id } } } }' % tuple(  # noqa: UP031
        emu_dataset.full_name(repo).split("/")
    )
    assert gql(srv, emu_client(), small).status_code == 200


def test_accounts_and_viewer(emu_server, emu_client, emu_dataset) -> None:
    ds = emu_dataset
    org = next(
        u for u in ds.truth(collaborator_repos=("*",))["users"].values() if u["type"] == "Organization"
    )
    q = """query($org: String!) { organization(login: $org) { login name email repositories { totalCount }
             repos: repositories(first: 5) { nodes { nameWithOwner isFork } } }
           viewer { login databaseId } }"""
    data = gql(emu_server, emu_client(), q, org=org["login"]).json()["data"]
    assert data["organization"]["login"] == org["login"] and data["organization"]["email"] == org["email"]
    assert data["organization"]["repositories"]["totalCount"] == org["public_repos"]
    assert all(
        n["nameWithOwner"].startswith(org["login"] + "/") for n in data["organization"]["repos"]["nodes"]
    )
    assert data["viewer"]["databaseId"] == ds.viewer_id("collab")
    missing = gql(emu_server, emu_client(), '{ user(login: "no-such-user-zz") { id } }').json()
    assert missing["data"] == {"user": None} and missing["errors"][0]["type"] == "NOT_FOUND"


def test_a_saml_organisation_nulls_the_fork_it_owns_unless_asked_only_what_it_still_answers(
    emu_server, emu_client, emu_dataset
) -> None:
    ds = emu_dataset
    assert ds.saml_orgs, "the default dataset has SAML organisations"
    repo = biggest(ds, "forks", lambda r: any(ds.repos[f].owner_id in ds.saml_orgs for _, f in r.forks[:100]))
    saml_at = [i for i, (_, f) in enumerate(repo.forks[:100]) if ds.repos[f].owner_id in ds.saml_orgs]
    body = gql(emu_server, emu_client(), FORKS, **owner_name(ds, repo)).json()
    nodes = body["data"]["repository"]["forks"]["nodes"]
    assert [i for i, n in enumerate(nodes) if n is None] == saml_at
    forbidden = [e for e in body["errors"] if e.get("type") == "FORBIDDEN"]
    assert [e["path"] for e in forbidden] == [["repository", "forks", "nodes", i, "owner"] for i in saml_at]
    assert "SAML" in forbidden[0]["message"]
    lean = FORKS.split("nodes {")[0] + "nodes { databaseId owner { __typename id login } } } } }"
    body = gql(emu_server, emu_client(), lean, **owner_name(ds, repo)).json()
    assert "errors" not in body
    owners = [n["owner"]["login"] for n in body["data"]["repository"]["forks"]["nodes"]]
    assert [owners[i] for i in saml_at] == [ds.login(ds.repos[repo.forks[i][1]].owner_id) for i in saml_at]


def test_a_deleted_account_is_not_found_by_node_id_and_404_by_login(
    emu_server, emu_client, emu_dataset
) -> None:
    ds = emu_dataset
    gone = sorted(ds.deleted)
    assert gone, "the default dataset has deleted accounts"
    alive = next(u for r in ds.repos.values() for _, u in r.stars if ds.user_type(u) == "User")
    ids = [node_id("User", gone[0]), node_id(ds.user_type(alive), alive)]
    q = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename ... on Actor { login } } }"
    body = gql(emu_server, emu_client(), q, ids=ids).json()
    assert body["data"]["nodes"][0] is None and body["data"]["nodes"][1] is not None
    assert [(e["type"], e["path"]) for e in body["errors"]] == [("NOT_FOUND", ["nodes", 0])]
    client = emu_client()
    assert client.get(f"{emu_server.url}/users/{ds.login(gone[0])}").status_code == 404
    assert client.get(f"{emu_server.url}/user/{gone[0]}").status_code == 404
    truth = ds.truth(relations=("contributors",), collaborator_repos=("*",))
    assert set(truth["gone"]) == set(gone)
