"""The emulator's SDL must be a strict subset of GitHub's public schema."""

from __future__ import annotations

from functools import cache

import pytest
from conftest import github_schema_real
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    build_schema,
    parse,
    validate,
)

from github_emulator import load_schema
from github_emulator.schema import schema_sdl

pytestmark = pytest.mark.unit


@cache
def real_schema() -> GraphQLSchema:
    return github_schema_real()


def _kind(t: object) -> str:
    return type(t).__name__


def subset_violations(ours: GraphQLSchema, theirs: GraphQLSchema) -> list[str]:
    """Everything in `ours` that GitHub's schema does not have with the same shape."""
    problems: list[str] = []
    if ours.query_type.name != theirs.query_type.name:
        problems.append("query root name differs")
    for name, t in ours.type_map.items():
        if name.startswith("__"):
            continue
        other = theirs.type_map.get(name)
        if other is None:
            problems.append(f"type {name} missing")
            continue
        if _kind(t) != _kind(other):
            problems.append(f"type {name} is {_kind(t)} here, {_kind(other)} on GitHub")
            continue
        if isinstance(t, GraphQLObjectType | GraphQLInterfaceType):
            extra = {i.name for i in t.interfaces} - {i.name for i in other.interfaces}
            problems += [f"{name} implements {i} only here" for i in sorted(extra)]
            for fname, f in t.fields.items():
                of = other.fields.get(fname)
                if of is None:
                    problems.append(f"field {name}.{fname} missing")
                    continue
                if str(f.type) != str(of.type):
                    problems.append(f"field {name}.{fname}: {f.type} here, {of.type} on GitHub")
                for aname, a in f.args.items():
                    oa = of.args.get(aname)
                    if oa is None:
                        problems.append(f"argument {name}.{fname}({aname}) missing")
                    elif str(a.type) != str(oa.type) or a.default_value != oa.default_value:
                        problems.append(f"argument {name}.{fname}({aname}) differs")
                # arguments GitHub requires must not be left out
                for aname, oa in of.args.items():
                    if aname not in f.args and str(oa.type).endswith("!") and oa.default_value is None:
                        problems.append(f"required argument {name}.{fname}({aname}) left out")
        elif isinstance(t, GraphQLInputObjectType):
            for fname, f in t.fields.items():
                of = other.fields.get(fname)
                if of is None or str(f.type) != str(of.type):
                    problems.append(f"input field {name}.{fname} differs")
        elif isinstance(t, GraphQLEnumType):
            problems += [f"enum value {name}.{v} missing" for v in t.values if v not in other.values]
        elif isinstance(t, GraphQLUnionType):
            extra = {m.name for m in t.types} - {m.name for m in other.types}
            problems += [f"union {name} member {m} missing" for m in sorted(extra)]
    return problems


def test_subset_schema_builds_with_full_validation() -> None:
    schema = load_schema()
    assert schema.query_type is not None
    for name in ("Repository", "User", "Organization", "Bot", "StargazerEdge", "RateLimit", "PageInfo"):
        assert name in schema.type_map


def test_subset_schema_is_a_strict_subset_of_github() -> None:
    assert subset_violations(load_schema(), real_schema()) == []


def test_subset_checker_catches_invented_parts() -> None:
    # guard against a checker that passes vacuously
    bad_sdl = (
        schema_sdl()
        .replace("  isFork: Boolean!\n  isPrivate", "  isFork: Boolean!\n  isFancy: Boolean!\n  isPrivate")
        .replace("  STARRED_AT\n", "  STARRED_AT\n  STARRED_BY\n")
        .replace("stargazerCount: Int!", "stargazerCount: String!")
        .replace("type Bot implements", "type Robot {\n  id: ID!\n}\n\ntype Bot implements")
    )
    problems = subset_violations(build_schema(bad_sdl), real_schema())
    assert "field Repository.isFancy missing" in problems
    assert "enum value StarOrderField.STARRED_BY missing" in problems
    assert "field Repository.stargazerCount: String! here, Int! on GitHub" in problems
    assert "type Robot missing" in problems


COLLECTOR_STYLE_QUERIES = [
    """query($owner: String!, $name: String!, $after: String) {
         rateLimit { cost remaining resetAt used limit nodeCount }
         repository(owner: $owner, name: $name) {
           databaseId nameWithOwner isEmpty stargazerCount forkCount viewerPermission
           forks(first: 100, after: $after, orderBy: {field: CREATED_AT, direction: ASC}) {
             totalCount pageInfo { hasNextPage endCursor }
             nodes { databaseId nameWithOwner createdAt owner { __typename login
               ... on User { databaseId name company websiteUrl location email bio twitterUsername
                             createdAt updatedAt followers { totalCount } following { totalCount }
                             repositories(privacy: PUBLIC, ownerAffiliations: OWNER) { totalCount } }
               ... on Organization { databaseId name websiteUrl location orgEmail: email description
                                     twitterUsername createdAt updatedAt repositories { totalCount } } } }
           }
           stargazers(first: 100, orderBy: {field: STARRED_AT, direction: DESC}) {
             totalCount edges { cursor starredAt node { id login } } }
           watchers(last: 10) { totalCount nodes { login } }
         }
       }""",
    """query($ids: [ID!]!) { nodes(ids: $ids) { __typename id
         ... on User { login name } ... on Bot { login createdAt } ... on Organization { login }
         ... on Repository { nameWithOwner } } }""",
    '{ viewer { login } user(login: "x") { id } organization(login: "y") { id } node(id: "z") { id } }',
]


@pytest.mark.parametrize("query", COLLECTOR_STYLE_QUERIES)
def test_queries_valid_here_are_valid_on_github(query: str) -> None:
    doc = parse(query)
    assert validate(load_schema(), doc) == []
    assert validate(real_schema(), doc) == []


def test_every_query_shape_the_client_builds_is_valid_here_and_on_github() -> None:
    """The collector's documents (queries.sample_queries: summaries, every relation's pages,
    the author connections among them, profile look-ups) against both schemas."""
    from github_collector.queries import AUTHOR_CONNECTION, sample_queries

    docs = [q for q, _ in sample_queries()]
    for field in AUTHOR_CONNECTION.values():
        assert any(f"{field}(first:" in d for d in docs), field
    for doc in docs:
        parsed = parse(doc)
        assert validate(real_schema(), parsed) == [], doc[:300]
        assert validate(load_schema(), parsed) == [], doc[:300]
