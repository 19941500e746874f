"""GitHub's limit and error answers (ANSWER_KINDS): injected one by one or at random, their exact
shapes, accounts that share quota, the GraphQL CPU budget, and prescribed waits with the requests
that come too early."""

from __future__ import annotations

import json
import time

import pytest
import requests
from fixtures_emulator import *  # noqa: F403
from fixtures_emulator import EMU_TOKEN_PLAIN, emu_tokens
from support import listed_repo

from github_emulator import (
    ANSWER_KINDS,
    NATURAL_ANSWERS,
    SPECIAL_REPOS,
    TokenConfig,
    parse_token_spec,
)
from github_emulator.app import VALIDATION_ERROR

pytestmark = pytest.mark.integration

EMPTY = SPECIAL_REPOS["empty"]
SECONDARY_START = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
TIMEOUT_START = "Something went wrong while executing your query. This may be the result of a timeout"
VIEWER = {"query": "{ viewer { login } }"}
GRAPHQL_KINDS = {
    "graphql_rate_limited",
    "graphql_rate_limited_stale_header",
    "graphql_rate_limit_code",
    "graphql_secondary_200",
    "graphql_secondary_403",
    "graphql_timeout",
    "validation_error",
    "resource_limits",
}
REST_KINDS = {"rest_primary", "rest_secondary_403", "rest_secondary_429", "foreign_redirect", "foreign_link"}


def gql(srv, s: requests.Session, body: dict | None = None) -> requests.Response:
    return s.post(f"{srv.url}/graphql", json=body or VIEWER, timeout=10)


def rest(srv, s: requests.Session, path: str = f"/repos/{EMPTY}", **kw) -> requests.Response:
    return s.get(f"{srv.url}{path}", timeout=10, **kw)


def two_lists(ds) -> tuple[dict, str]:
    """A query with a forks page of 5 and a stargazers page of 2 (the forks list is the larger)."""
    owner, name = listed_repo(ds).split("/")
    query = (
        f'{{ repository(owner: "{owner}", name: "{name}") {{ name forks(first: 5) {{ totalCount '
        "nodes { id } } stargazers(first: 2) { nodes { login } } } }"
    )
    return {"query": query}, f"{owner}/{name}"


def uid(srv, account: str = "collab") -> int:
    return srv.app.ds.viewer_id(account)


def post_inject(srv, **payload: object) -> requests.Response:
    return requests.post(f"{srv.url}/_emulator/inject", json=payload, timeout=10)


# ---------------------------------------------------------------------- the interface
def test_kinds_are_exported_and_injections_validated(emu_server) -> None:
    assert set(ANSWER_KINDS) == GRAPHQL_KINDS | REST_KINDS | {"unauthorized", "dropped_connection"}
    assert isinstance(ANSWER_KINDS, tuple) and "primary_exhausted" in NATURAL_ANSWERS
    bad = [
        ({"kind": "nope"}, "nope"),
        ({"kind": "rest_primary", "status": 418}, "418"),
        ({"kind": "rest_secondary_403", "retry_after": "sometimes"}, "sometimes"),
        ({"kind": "rest_secondary_403", "colour": "red"}, "colour"),
        ({"kind": "unauthorized", "count": 0}, "count"),
        ({"kind": "unauthorized", "token": "ghost"}, "ghost"),
        ({"kind": "foreign_redirect", "status": 301}, "301"),
        ({"kind": "graphql_timeout", "body": "html"}, "html"),
        ({"count": 1}, "kind"),
    ]
    for payload, named in bad:
        r = post_inject(emu_server, **payload)
        assert r.status_code == 400 and named in r.json()["error"], payload
    with pytest.raises(ValueError, match="nope"):
        emu_server.inject("nope")
    assert emu_server.app.pending_answers() == []  # nothing half-stored
    assert post_inject(emu_server, kind="unauthorized", count=2, token="plain").json() == {"ok": True}
    assert emu_server.app.pending_answers() == [
        {"kind": "unauthorized", "left": 2, "token": "plain", "options": {}}
    ]


# ---------------------------------------------------------------------- GraphQL primary forms
@pytest.mark.parametrize(
    "kind", ["graphql_rate_limited", "graphql_rate_limited_stale_header", "graphql_rate_limit_code"]
)
def test_graphql_primary_forms_empty_the_window(emu_server, emu_client, kind: str) -> None:
    s = emu_client()
    emu_server.inject(kind)
    r = gql(emu_server, s)
    assert r.status_code == 200
    if kind == "graphql_rate_limit_code":
        error = {
            "type": "RATE_LIMIT",
            "extensions": {"code": "graphql_rate_limit"},
            "message": f"API rate limit already exceeded for user ID {uid(emu_server)}.",
        }
    else:
        error = {"type": "RATE_LIMITED", "message": f"API rate limit exceeded for user ID {uid(emu_server)}."}
    assert r.json() == {"data": None, "errors": [error]}
    remaining = int(r.headers["x-ratelimit-remaining"])
    assert remaining > 0 if kind.endswith("stale_header") else remaining == 0
    # the window is empty whatever the header said: the next query meets the natural limit
    window = emu_server.stats()["tokens"]["collab"]["graphql"]
    assert window["remaining"] == 0
    nxt = gql(emu_server, s)
    assert nxt.json()["errors"][0]["type"] == "RATE_LIMITED" and nxt.headers["x-ratelimit-remaining"] == "0"
    assert rest(emu_server, s).status_code == 200  # REST has its own window
    stats = emu_server.stats()
    assert stats["answers"][kind] == 1 and stats["answers"]["primary_exhausted"] == 1
    emu_server.reset_quota()
    assert gql(emu_server, s).json()["data"]["viewer"]["login"]


@pytest.mark.parametrize("status", [None, 403, 429])
def test_rest_primary(emu_server_factory, emu_client, status: int | None) -> None:
    srv = emu_server_factory(primary_limit_status=429 if status is None else 403)
    s = emu_client()
    srv.inject("rest_primary", **({"status": status} if status else {}))
    r = rest(srv, s)
    assert r.status_code == (status or 429)
    assert r.json()["message"].startswith(f"API rate limit exceeded for user ID {uid(srv)}. ")
    assert r.headers["x-ratelimit-remaining"] == "0" and int(r.headers["x-ratelimit-reset"]) > time.time()
    assert srv.stats()["tokens"]["collab"]["core"]["remaining"] == 0
    assert gql(srv, s).status_code == 200  # GraphQL has its own window
    assert srv.stats()["answers"]["rest_primary"] == 1


# ---------------------------------------------------------------------- secondary forms
@pytest.mark.parametrize("form", ["present", "absent", "blank"])
@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("graphql_secondary_200", 200),
        ("graphql_secondary_403", 403),
        ("rest_secondary_403", 403),
        ("rest_secondary_429", 429),
    ],
)
def test_secondary_forms(emu_server, emu_client, kind: str, status: int, form: str) -> None:
    s = emu_client()
    emu_server.inject(kind, retry_after=form, wait=7)
    send = (lambda: gql(emu_server, s)) if kind.startswith("graphql") else (lambda: rest(emu_server, s))
    r = send()
    assert r.status_code == status
    body = r.json()
    if status == 200:
        assert set(body) == {"errors"} and len(body["errors"]) == 1
        message = body["errors"][0]["message"]
    else:
        message = body["message"]
        assert body["status"] == str(status) and "secondary-rate-limits" in body["documentation_url"]
    assert message.startswith(SECONDARY_START)
    assert int(r.headers["x-ratelimit-remaining"]) > 0
    expected = {"present": "7", "absent": None, "blank": ""}[form]
    assert r.headers.get("retry-after") == expected
    nxt = send()  # early, but answered normally
    assert nxt.status_code == 200 and "retry-after" not in nxt.headers
    stats = emu_server.stats()
    assert stats["answers"][kind] == 1 and stats["early_requests"] == 1


def test_retry_after_form_is_random_and_seeded(emu_server_factory, emu_client) -> None:
    def forms(seed: int) -> list[str | None]:
        srv = emu_server_factory(fault_seed=seed)
        s = emu_client()
        srv.inject("rest_secondary_403", count=12)
        out = [rest(srv, s).headers.get("retry-after") for _ in range(12)]
        assert rest(srv, s).status_code == 200  # count used up
        return out

    first = forms(5)
    assert forms(5) == first
    assert {"3", None, ""} == set(first)


# ---------------------------------------------------------------------- GraphQL answers
@pytest.mark.parametrize("penalty", [1, 3])
def test_graphql_timeout_is_charged_with_a_penalty(emu_server_factory, emu_client, penalty: int) -> None:
    srv = emu_server_factory(timeout_penalty_points=penalty)
    s = emu_client()
    srv.inject("graphql_timeout")
    r = gql(srv, s)
    assert r.status_code == 502
    body = r.json()
    assert body["data"] is None and body["errors"][0]["message"].startswith(TIMEOUT_START)
    assert r.headers["x-ratelimit-used"] == str(1 + penalty)
    assert srv.request_log()[-1]["cost"] == 1 + penalty
    assert gql(srv, s).status_code == 200
    srv.inject("graphql_timeout", body="server_error")
    plain = gql(srv, s)
    assert plain.status_code == 502 and plain.json() == {"message": "Server Error"}


def test_validation_error_has_no_data_and_is_free(emu_server, emu_client) -> None:
    s = emu_client()
    emu_server.inject("validation_error")
    r = gql(emu_server, s)
    assert r.status_code == 200 and r.json() == VALIDATION_ERROR and "data" not in r.json()
    err = r.json()["errors"][0]
    assert err["extensions"]["code"] == "undefinedField" and err["path"][0] == "query Collect"
    assert emu_server.stats()["tokens"]["collab"]["graphql"]["used"] == 0
    assert gql(emu_server, s).json()["data"]["viewer"]["login"]


def test_resource_limits_nulls_the_largest_list(emu_server, emu_client, emu_dataset) -> None:
    s = emu_client()
    query, full_name = two_lists(emu_dataset)
    normal = gql(emu_server, s, query).json()
    assert len(normal["data"]["repository"]["forks"]["nodes"]) == 5
    emu_server.inject("resource_limits")
    r = gql(emu_server, s, query)
    body = r.json()
    assert r.status_code == 200
    assert body["data"]["repository"]["forks"] is None  # the larger list, nulled where it stands
    assert body["data"]["repository"]["stargazers"] == normal["data"]["repository"]["stargazers"]
    assert body["data"]["repository"]["name"] == full_name.split("/")[1]
    assert body["errors"] == [
        {
            "type": "RESOURCE_LIMITS_EXCEEDED",
            "path": ["repository", "forks"],
            "message": "Resource limits for this query exceeded.",
        }
    ]
    assert r.headers["x-ratelimit-used"] == "2"  # charged like the query
    assert gql(emu_server, s, query).json() == normal


def test_resource_limit_nodes_answers_big_queries_by_itself(
    emu_server_factory, emu_client, emu_dataset
) -> None:
    srv = emu_server_factory(resource_limit_nodes=6)
    s = emu_client()
    query, _ = two_lists(emu_dataset)  # 7 nodes
    assert gql(srv, s, query).json()["errors"][0]["type"] == "RESOURCE_LIMITS_EXCEEDED"
    small = {"query": query["query"].replace("first: 5", "first: 4")}  # 6 nodes
    assert "errors" not in gql(srv, s, small).json()
    assert srv.stats()["answers"]["resource_limits"] == 1


def test_more_than_100_node_ids(emu_server, emu_client) -> None:
    s = emu_client()
    q = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    r = gql(emu_server, s, {"query": q, "variables": {"ids": [f"U_{i}" for i in range(101)]}})
    assert r.status_code == 200
    assert r.json() == {
        "data": None,
        "errors": [
            {
                "type": "ARGUMENT_LIMIT",
                "message": "You may not provide more than 100 node ids; you provided 101.",
            }
        ],
    }
    assert emu_server.stats()["tokens"]["collab"]["graphql"]["used"] == 0
    ok = gql(emu_server, s, {"query": q, "variables": {"ids": [f"U_{i}" for i in range(100)]}})
    assert len(ok.json()["data"]["nodes"]) == 100


# ---------------------------------------------------------------------- both APIs
def test_unauthorized_once_then_the_token_works(emu_server, emu_client) -> None:
    s = emu_client()
    emu_server.inject("unauthorized")
    r = rest(emu_server, s)
    assert r.status_code == 401
    assert r.json() == {
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
        "status": "401",
    }
    assert rest(emu_server, s).status_code == 200
    emu_server.inject("unauthorized")
    assert gql(emu_server, s).status_code == 401
    assert gql(emu_server, s).status_code == 200


def test_dropped_connection_makes_requests_raise(emu_server, emu_client, emu_dataset) -> None:
    s = emu_client()
    emu_server.inject("dropped_connection", count=2)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        rest(emu_server, s, f"/repos/{listed_repo(emu_dataset)}/forks")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        gql(emu_server, s)
    assert rest(emu_server, s).status_code == 200 and gql(emu_server, s).status_code == 200
    log = emu_server.request_log()
    assert [e["answer"] for e in log] == ["dropped_connection", "dropped_connection", None, None]
    assert log[0]["cost"] == 1  # processed, so charged


# ---------------------------------------------------------------------- foreign hosts
def test_foreign_redirect(emu_server, emu_client) -> None:
    s = emu_client()
    port = emu_server.port
    emu_server.inject("foreign_redirect")
    r = rest(emu_server, s, f"/repos/{EMPTY}?x=1", allow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == f"http://localhost:{port}/repos/{EMPTY}?x=1"
    # requests follows it to the other host without the token
    emu_server.inject("foreign_redirect", status=307)
    followed = rest(emu_server, s)
    assert followed.status_code == 200 and followed.url.startswith(f"http://localhost:{port}/")
    assert [h.status_code for h in followed.history] == [307]
    stats = emu_server.stats()
    assert stats["foreign_requests"] == 1 and stats["foreign_requests_with_token"] == 0
    # a client that sends its token there is counted
    assert s.get(r.headers["location"], timeout=10).status_code == 200
    assert emu_server.stats()["foreign_requests_with_token"] == 1
    assert emu_server.stats()["answers"]["foreign_redirect"] == 2


def test_foreign_link(emu_server, emu_client, emu_dataset) -> None:
    s = emu_client()
    path = f"/repos/{listed_repo(emu_dataset)}/forks?per_page=2"
    emu_server.inject("foreign_link", count=2)
    assert rest(emu_server, s, f"/repos/{EMPTY}").status_code == 200  # not a list: not taken
    r = rest(emu_server, s, path)
    assert r.status_code == 200 and isinstance(r.json(), list)
    nxt = r.links["next"]["url"]
    assert nxt.startswith(f"http://localhost:{emu_server.port}/") and "page=2" in nxt
    assert r.links["last"]["url"].startswith(emu_server.url)  # only rel="next" moves
    assert emu_server.stats()["foreign_requests_with_token"] == 0
    assert s.get(nxt, timeout=10).status_code == 200  # the session sends its token along
    assert emu_server.stats()["foreign_requests_with_token"] == 1


# ---------------------------------------------------------------------- targeting and randomness
def test_per_token_targeting_and_count(emu_server, emu_client) -> None:
    collab, plain = emu_client(), emu_client(EMU_TOKEN_PLAIN)
    emu_server.inject("rest_secondary_429", count=2, token="plain", retry_after="present")
    assert gql(emu_server, plain).status_code == 200  # a REST kind: GraphQL untouched
    assert rest(emu_server, collab).status_code == 200
    assert [rest(emu_server, plain).status_code for _ in range(3)] == [429, 429, 200]
    assert rest(emu_server, collab).status_code == 200
    # queued injections are given oldest first
    emu_server.inject("unauthorized")
    emu_server.inject("rest_secondary_403", retry_after="absent")
    assert [rest(emu_server, collab).status_code for _ in range(3)] == [401, 403, 200]
    assert emu_server.stats()["answers"]["rest_secondary_429"] == 2


def test_answer_rates_are_random_seeded_and_validated(emu_server_factory, emu_client) -> None:
    def run(srv) -> list[int]:
        s = emu_client()
        return [rest(srv, s).status_code for _ in range(20)]

    srv = emu_server_factory(answer_rates={"rest_secondary_429": 0.5}, fault_seed=3)
    first = run(srv)
    assert set(first) == {200, 429}
    assert gql(srv, emu_client()).status_code == 200  # GraphQL requests are not eligible
    srv.set_faults(fault_seed=3)
    assert run(srv) == first
    assert srv.stats()["answers"]["rest_secondary_429"] == 2 * first.count(429)
    # over HTTP, and every request the kind applies to gets it at rate 1
    ok = requests.post(
        f"{srv.url}/_emulator/faults", json={"answer_rates": {"graphql_secondary_403": 1.0}}, timeout=10
    )
    assert ok.status_code == 200
    assert {gql(srv, emu_client()).status_code for _ in range(3)} == {403}
    for bad in ({"nope": 0.1}, {"unauthorized": 1.5}, {"unauthorized": True}, ["unauthorized"]):
        r = requests.post(f"{srv.url}/_emulator/faults", json={"answer_rates": bad}, timeout=10)
        assert r.status_code == 400, bad
    srv.set_faults(answer_rates={})
    assert rest(srv, emu_client()).status_code == 200


# ---------------------------------------------------------------------- prescribed waits
def test_early_requests_are_counted_per_account(emu_server_factory, emu_client) -> None:
    tokens = [*emu_tokens(), TokenConfig(name="twin", token="emu-tok-twin-1111111111", account="collab")]
    srv = emu_server_factory(tokens=tokens, secondary_default_wait=30.0)
    collab, plain, twin = emu_client(), emu_client(EMU_TOKEN_PLAIN), emu_client("emu-tok-twin-1111111111")
    srv.inject("rest_secondary_403", retry_after="present", wait=1)
    assert rest(srv, collab).status_code == 403
    assert rest(srv, collab).status_code == 200  # early
    assert gql(srv, twin).status_code == 200  # early too: another token of the account, other resource
    assert rest(srv, plain).status_code == 200  # another account: not early
    assert rest(srv, collab, "/rate_limit").status_code == 200  # asking for the limits is allowed
    stats = srv.stats()
    assert stats["early_requests"] == 2
    assert stats["early_requests_by_account"] == {"collab": 2, "plain": 0}
    log = srv.request_log()
    assert [e["early"] for e in log] == [False, True, True, False, False]
    assert [e["account"] for e in log] == ["collab", "collab", "collab", "plain", "collab"]
    assert log[0]["answer"] == "rest_secondary_403" and log[1]["answer"] is None
    assert all(isinstance(e["t"], float) for e in log)
    time.sleep(max(0.0, log[0]["t"] + 1 - time.time()) + 0.05)
    assert rest(srv, collab).status_code == 200
    assert srv.stats()["early_requests"] == 2  # after the wait: not early


def test_a_secondary_limit_without_retry_after_prescribes_the_default_wait(
    emu_server_factory, emu_client
) -> None:
    srv = emu_server_factory(secondary_default_wait=0.5)
    s = emu_client()
    srv.inject("graphql_secondary_200", retry_after="blank")
    assert gql(srv, s).status_code == 200
    t0 = srv.request_log()[-1]["t"]
    assert srv.stats()["accounts"]["collab"]["wait_until"] == pytest.approx(t0 + 0.5, abs=0.05)
    rest(srv, s)
    assert srv.stats()["early_requests"] == 1
    time.sleep(max(0.0, t0 + 0.5 - time.time()) + 0.05)
    rest(srv, s)
    assert srv.stats()["early_requests"] == 1


def test_primary_waits_until_reset_and_punish_early(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(tokens=emu_tokens(core_limit=1), punish_early=True, secondary_retry_after=2)
    s = emu_client()
    assert rest(srv, s).status_code == 200
    limited = rest(srv, s)
    assert limited.status_code == 403 and limited.headers["x-ratelimit-remaining"] == "0"
    assert srv.stats()["accounts"]["collab"]["wait_until"] == int(limited.headers["x-ratelimit-reset"])
    # an early request gets a fresh secondary limit, even on GraphQL, which has quota left
    punished = gql(srv, s)
    assert punished.status_code == 403 and punished.json()["message"].startswith(SECONDARY_START)
    assert punished.headers["retry-after"] == "2"
    stats = srv.stats()
    assert stats["early_requests"] == 1 and stats["answers"]["secondary_early"] == 1
    assert stats["answers"]["primary_exhausted"] == 1
    # a quota reset ends the primary wait, the secondary one stands
    srv.reset_quota()
    assert rest(srv, s).status_code == 403
    assert srv.stats()["early_requests"] == 2


# ---------------------------------------------------------------------- accounts
def test_tokens_of_one_account_share_its_quota(emu_server_factory, emu_client) -> None:
    tokens = [
        TokenConfig(name="work", token="emu-tok-work-1", core_limit=3, account="octo"),
        TokenConfig(name="home", token="emu-tok-home-2", core_limit=99, account="octo"),
        parse_token_spec("other=emu-tok-other-3:core=3"),
    ]
    srv = emu_server_factory(tokens=tokens)
    work, home, other = (
        emu_client("emu-tok-work-1"),
        emu_client("emu-tok-home-2"),
        emu_client("emu-tok-other-3"),
    )
    me = rest(srv, work, "/user")
    assert me.status_code == 200 and me.headers["x-ratelimit-remaining"] == "2"  # costs 1 core
    user = me.json()
    assert user["login"] == "octo" and user["type"] == "User" and user["name"] is None
    assert isinstance(user["id"], int) and user["node_id"]
    assert rest(srv, home, "/user").json() == user  # the same account
    assert rest(srv, other, "/user").json()["login"] == "other"
    # the limit of the account is its first token's: 3, whichever token spends it
    r = rest(srv, home)
    assert r.headers["x-ratelimit-limit"] == "3" and r.headers["x-ratelimit-remaining"] == "0"
    assert rest(srv, work).status_code == 403 and rest(srv, home).status_code == 403
    assert rest(srv, other).status_code == 200
    stats = srv.stats()
    assert stats["accounts"]["octo"]["tokens"] == ["work", "home"]
    assert stats["accounts"]["octo"]["core"]["remaining"] == 0
    assert stats["cost_by_account"]["octo"]["core"] == 3
    assert stats["cost_by_token"]["work"]["core"] == 1 and stats["cost_by_token"]["home"]["core"] == 2
    assert stats["tokens"]["work"]["core"] == stats["tokens"]["home"]["core"]
    bad = requests.get(f"{srv.url}/user", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert bad.status_code == 401 and bad.json()["message"] == "Bad credentials"


def test_token_spec_account() -> None:
    assert parse_token_spec("a=v1:account=acme:core=7").account == "acme"
    assert parse_token_spec("a=v1:core=7").account == "a"
    assert TokenConfig(name="n", token="v").account == "n"


# ---------------------------------------------------------------------- CPU budget
def test_graphql_cpu_budget_answers_a_secondary_limit(emu_server_factory, emu_client, emu_dataset) -> None:
    srv = emu_server_factory(
        graphql_cpu_seconds_per_minute=0.5,
        graphql_cpu_ms_base=100,
        graphql_cpu_ms_per_node=10,
        secondary_window_seconds=30,
    )
    s = emu_client()
    query, _ = two_lists(emu_dataset)  # 7 nodes: 170 ms
    assert [gql(srv, s, query).status_code for _ in range(3)] == [200, 200, 200]  # 510 ms booked
    refused = gql(srv, s, query)
    assert refused.status_code == 403 and refused.json()["message"].startswith(SECONDARY_START)
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert int(refused.headers["x-ratelimit-remaining"]) > 0
    assert rest(srv, s).status_code == 200  # only GraphQL is refused (the request is early, though)
    stats = srv.stats()
    assert stats["answers"]["secondary_cpu"] == 1 and stats["accounts"]["collab"]["graphql_cpu_ms"] == 510
    assert stats["tokens"]["collab"]["graphql"]["used"] == 3  # the refused query was not charged
    srv.set_faults(graphql_cpu_seconds_per_minute=None)  # off
    assert gql(srv, s, query).status_code == 200


def test_default_cpu_cost_of_a_page(emu_server) -> None:
    assert 100 <= emu_server.app.acc.cpu_ms(100) <= 300
    json.dumps(emu_server.stats())  # stats stay JSON


def test_cli_takes_answer_rates() -> None:
    from github_emulator.__main__ import parse_args

    args = parse_args(
        ["--answer-rate", "unauthorized=0.1", "--answer-rate", "rest_secondary_429=1", "--punish-early"]
    )
    assert args.answer_rate == ["unauthorized=0.1", "rest_secondary_429=1"] and args.punish_early
    assert args.secondary_default_wait == 60.0
