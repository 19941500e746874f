"""GraphQL cost and node count, GitHub's formula (see github_emulator.cost)."""

from __future__ import annotations

import pytest

from github_emulator import analyze, load_schema, query_cost

pytestmark = pytest.mark.unit


def repo(body: str) -> str:
    return '{ repository(owner: "o", name: "r") { %s } }' % body  # noqa: UP031 (braces in GraphQL)


def test_single_page_of_100_costs_one() -> None:
    assert query_cost(repo("forks(first: 100) { nodes { id } }")) == (1, 100)


def test_minimum_cost_is_one() -> None:
    assert query_cost("{ rateLimit { cost } }") == (1, 0)
    assert query_cost(repo("name stargazerCount")) == (1, 0)
    # nodes(ids:) is a plain list field, not a connection
    assert query_cost('{ nodes(ids: ["a", "b"]) { id } }') == (1, 0)


def test_connections_selecting_only_total_count_add_nothing() -> None:
    # measured on GitHub: a nested connection asking only totalCount is free
    q = repo("""forks(first: 100) { nodes { id
                  stargazers(first: 100) { totalCount }
                  watchers(last: 100) { totalCount } } }""")
    assert query_cost(q) == (1, 100)
    # and so is a profile's followers { totalCount } on each of 100 users
    q = repo("stargazers(first: 100) { nodes { followers { totalCount } following { totalCount } } }")
    assert query_cost(q) == (1, 100)


def test_nested_connections_multiply() -> None:
    # GitHub's documented example shape: 1 + 100 + 100*50 = 5,101 requests -> 51 points
    q = repo("""forks(first: 100) { nodes {
                  stargazers(first: 50) { edges { node {
                    repositories(first: 60) { nodes { id } } } } } } }""")
    cost, nodes = query_cost(q)
    assert cost == 51
    assert nodes == 100 + 100 * 50 + 100 * 50 * 60


def _requests_query(top_level_extra: int) -> str:
    # 1 request for forks + 49 * 3 for the nested ones = 148, plus extra top-level connections
    extra = " ".join(f"w{i}: watchers(first: 1) {{ nodes {{ login }} }}" for i in range(top_level_extra))
    return repo(f"""forks(first: 49) {{ nodes {{
                       a: stargazers(first: 1) {{ nodes {{ login }} }}
                       b: stargazers(last: 1) {{ edges {{ cursor }} }}
                       c: watchers(first: 1) {{ nodes {{ login }} }} }} }} {extra}""")


@pytest.mark.parametrize(("extra", "cost"), [(0, 1), (1, 1), (2, 2), (53, 2), (102, 3)])
def test_division_by_100_rounds_half_up(extra: int, cost: int) -> None:
    # 148 -> 1.48 -> 1; 149 -> 1; 150 -> 1.5 -> 2; 201 -> 2; 250 -> 2.5 -> 3
    assert query_cost(_requests_query(extra))[0] == cost


def test_variables_and_defaults_are_used() -> None:
    q = """query($n: Int = 100, $m: Int!) { repository(owner: "o", name: "r") {
             forks(first: $n) { nodes { stargazers(first: $m) { nodes { login } } } } } }"""
    assert query_cost(q, {"m": 100}) == (1, 100 + 100 * 100)  # 101 requests -> 1.01 -> 1
    assert query_cost(q, {"n": 10, "m": 5}) == (1, 10 + 50)


def test_fragments_are_expanded() -> None:
    q = """query { repository(owner: "o", name: "r") { ...F } }
           fragment F on Repository { forks(first: 100) { nodes { ... on Repository { ...S } } } }
           fragment S on Repository { a: stargazers(first: 100) { nodes { login } }
                                      b: watchers(first: 100) { nodes { login } } }"""
    # 1 + 100 + 100 = 201 requests
    assert query_cost(q) == (2, 100 + 2 * 100 * 100)


def test_pagination_errors_are_reported_like_github() -> None:
    schema = load_schema()
    a = analyze(repo("forks { nodes { id } }"), schema)
    assert a.errors == [
        {
            "type": "MISSING_PAGINATION_BOUNDARIES",
            "path": ["repository", "forks"],
            "message": "You must provide a `first` or `last` value to properly paginate "
            "the `forks` connection.",
        }
    ]
    a = analyze(repo("forks(first: 101) { nodes { id } }"), schema)
    assert [e["message"] for e in a.errors] == [
        "Requesting 101 records on the `forks` connection exceeds the `first` limit of 100 records."
    ]
    assert analyze(repo("stargazers(last: 0) { nodes { id } }"), schema).errors
    assert analyze(repo("forks(first: 1, last: 1) { nodes { id } }"), schema).errors
    # totalCount alone needs no first/last
    assert analyze(repo("forks { totalCount }"), schema).errors == []


def test_node_limit() -> None:
    q = repo("""forks(first: 100) { nodes { stargazers(first: 100) { nodes {
                  repositories(first: 51) { nodes { id } } } } } }""")
    a = analyze(q, load_schema())
    assert a.node_count == 100 + 10_000 + 510_000
    assert a.errors[0]["type"] == "MAX_NODE_LIMIT_EXCEEDED"
    assert "520,100" in a.errors[0]["message"]


def test_email_and_dry_run_detection() -> None:
    schema = load_schema()
    assert analyze('{ user(login: "x") { email } }', schema).user_email
    assert analyze('{ user(login: "x") { ...U } } fragment U on User { email }', schema).user_email
    assert not analyze('{ organization(login: "x") { email } }', schema).user_email
    assert analyze("{ rateLimit(dryRun: true) { cost } }", schema).dry_run
    assert not analyze("{ rateLimit { cost } }", schema).dry_run
