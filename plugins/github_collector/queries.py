"""GraphQL documents the client sends, built from a few fixed pieces.

One query packs several parts: repository summaries, the next page of several (repo,
relation) connections, and ``nodes(ids:)`` profile look-ups. GitHub charges a query by the
connections it must fill (sum of requests / 100, rounded, at least 1), so one query with ten
100-node pages costs what one page does. Every value travels as a variable, never spliced
into the document.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

RELATIONS = ("contributors", "forkers", "stargazers", "watchers")
GRAPHQL_RELATIONS = ("forkers", "stargazers", "watchers")
MAX_PAGE = 100


def fragments(with_email: bool) -> dict[str, str]:
    # ``email`` needs the user:email or read:user scope; without it GitHub fails the whole query.
    # An organisation's email is String, a user's String!: one response name cannot hold both.
    email = " email" if with_email else ""
    return {
        "UserFields": "fragment UserFields on User { id databaseId login name company websiteUrl location"
        f"{email} bio twitterUsername createdAt updatedAt followers {{ totalCount }}"
        " following { totalCount } repositories(ownerAffiliations: [OWNER], privacy: PUBLIC) { totalCount } }",
        "OrgFields": "fragment OrgFields on Organization { id databaseId login name websiteUrl location"
        " orgEmail: email description twitterUsername createdAt updatedAt"
        " repositories(privacy: PUBLIC) { totalCount } }",
        "BotFields": "fragment BotFields on Bot { id databaseId login createdAt updatedAt }",
    }


# What can stand in each place, by GitHub's schema: any actor behind a node id, a user or
# an organisation owning a fork, only users starring or watching.
ANY_ACTOR = "__typename ...UserFields ...OrgFields ...BotFields"
OWNER = "__typename ...UserFields ...OrgFields"
USER = "__typename ...UserFields"
PAGE_INFO = "totalCount pageInfo { hasNextPage endCursor }"
SUMMARY = "databaseId nameWithOwner stargazerCount forkCount isEmpty watcherTotal: watchers { totalCount }"


def _connection(relation: str, v: str, direction: str) -> str:
    args = f"first: ${v}_n, after: ${v}_a"
    if relation == "forkers":
        return (
            f"{v}: forks({args}, orderBy: {{field: CREATED_AT, direction: {direction}}}) "
            f"{{ {PAGE_INFO} nodes {{ databaseId createdAt owner {{ {OWNER} }} }} }}"
        )
    if relation == "stargazers":
        return (
            f"{v}: stargazers({args}, orderBy: {{field: STARRED_AT, direction: {direction}}}) "
            f"{{ {PAGE_INFO} edges {{ starredAt node {{ {USER} }} }} }}"
        )
    if relation == "watchers":
        return f"{v}: watchers({args}) {{ {PAGE_INFO} nodes {{ {USER} }} }}"
    raise ValueError(f"relation {relation!r} is not served by GraphQL")


@dataclass
class ConnectionPage:
    relation: str
    first: int
    after: str | None = None
    newest_first: bool = False


@dataclass
class RepoPart:
    owner: str
    name: str
    summary: bool = False
    pages: list[ConnectionPage] = field(default_factory=list)


@dataclass
class Query:
    repos: list[RepoPart] = field(default_factory=list)
    node_ids: list[list[str]] = field(default_factory=list)

    def connection_count(self) -> int:
        return sum(len(r.pages) for r in self.repos)

    def node_count(self) -> int:
        return sum(p.first for r in self.repos for p in r.pages) + sum(len(ids) for ids in self.node_ids)

    def estimated_cost(self) -> int:
        """GitHub's formula for these shapes: each top-level page is one request."""
        return max(1, int(self.connection_count() / 100 + 0.5))

    def build(self, with_email: bool) -> tuple[str, dict]:
        decls: list[str] = []
        body: list[str] = []
        variables: dict = {}
        for i, repo in enumerate(self.repos):
            decls += [f"$o{i}: String!", f"$n{i}: String!"]
            variables[f"o{i}"] = repo.owner
            variables[f"n{i}"] = repo.name
            sel: list[str] = ["databaseId nameWithOwner"]
            if repo.summary:
                sel = [SUMMARY]
            for page in repo.pages:
                v = f"r{i}_{page.relation}"
                decls += [f"${v}_n: Int!", f"${v}_a: String"]
                variables[f"{v}_n"] = max(1, min(MAX_PAGE, int(page.first)))
                variables[f"{v}_a"] = page.after
                sel.append(_connection(page.relation, v, "DESC" if page.newest_first else "ASC"))
            body.append(f"r{i}: repository(owner: $o{i}, name: $n{i}) {{ {' '.join(sel)} }}")
        for j, ids in enumerate(self.node_ids):
            decls.append(f"$ids{j}: [ID!]!")
            variables[f"ids{j}"] = list(ids)
            body.append(f"u{j}: nodes(ids: $ids{j}) {{ {ANY_ACTOR} }}")
        body.append("rateLimit { cost remaining resetAt }")
        head = f"query Collect({', '.join(decls)})" if decls else "query Collect"
        doc = f"{head} {{\n  " + "\n  ".join(body) + "\n}\n"
        # Only the fragments the document spreads: GraphQL rejects unused ones.
        for name, text in fragments(with_email).items():
            if "..." + name in doc:
                doc += text + "\n"
        return doc, variables


def sample_queries() -> Iterable[tuple[str, dict]]:
    """Every shape the client can send, for validation against GitHub's published schema."""
    for with_email in (True, False):
        for newest in (False, True):
            q = Query(
                repos=[
                    RepoPart(
                        "octo",
                        "repo",
                        summary=True,
                        pages=[ConnectionPage(r, 100, None, newest) for r in GRAPHQL_RELATIONS],
                    ),
                    RepoPart("octo", "other", pages=[ConnectionPage("forkers", 50, "Y3Vyc29yOjE=", newest)]),
                ],
                node_ids=[["U_1", "U_2"], ["O_3"]],
            )
            yield q.build(with_email)
        yield Query(repos=[RepoPart("a", "b", summary=True)]).build(with_email)
        yield Query(node_ids=[["U_1"]]).build(with_email)
