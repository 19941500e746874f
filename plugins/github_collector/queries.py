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

# People who opened issues, pull requests and discussions: public lists whatever the token's
# rights, read from connections whose nodes carry an ``author``.
AUTHOR_RELATIONS = ("issue_authors", "pull_request_authors", "discussion_authors")
AUTHOR_CONNECTION = {
    "issue_authors": "issues",
    "pull_request_authors": "pullRequests",
    "discussion_authors": "discussions",
}
RELATIONS = ("contributors", "forkers", "stargazers", "watchers", *AUTHOR_RELATIONS)
GRAPHQL_RELATIONS = ("forkers", "stargazers", "watchers", *AUTHOR_RELATIONS)
MAX_PAGE = 100
# Pages read per run, repository and author relation (0: no cap): 20,000 items, so a first
# listing of a huge repository spreads over a few daily runs instead of one run's quota.
DEFAULT_MAX_AUTHOR_PAGES = 200


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
# An item's author (an Actor): a user or a bot with its profile; anything else (a Mannequin of
# an imported repository, an EnterpriseUserAccount) by type and login. Null: a deleted account.
AUTHOR = "__typename login ...UserFields ...BotFields"
PAGE_INFO = "totalCount pageInfo { hasNextPage endCursor }"
# forkCount is the whole fork network (forks of forks too); directForks the repository's own
# forks, the forkers list. A totalCount without nodes fills no connection: it costs nothing.
SUMMARY = (
    "databaseId nameWithOwner stargazerCount forkCount directForks: forks { totalCount } isEmpty"
    " watcherTotal: watchers { totalCount }"
    # The newest star and fork: with an unchanged count, one newer than the stored mark means
    # someone left as someone joined. Two 1-node connections per summary: 50 summaries fill
    # the 100 connections of one point, which the summaries' query costs anyway.
    " newestStar: stargazers(first: 1, orderBy: {field: STARRED_AT, direction: DESC}) { edges { starredAt } }"
    " newestFork: forks(first: 1, orderBy: {field: CREATED_AT, direction: DESC}) { nodes { createdAt } }"
    # Authored items: whether the feature is on, and how many (a count without nodes is free).
    " hasIssuesEnabled hasDiscussionsEnabled issueTotal: issues { totalCount }"
    " pullRequestTotal: pullRequests { totalCount } discussionTotal: discussions { totalCount }"
)
# What a GitHub App installation token asks: it may not list stargazers (GitHub answers
# FORBIDDEN, which nulls the whole repository), so no newest star; counts still answer.
SUMMARY_INTEGRATION = SUMMARY.replace(
    " newestStar: stargazers(first: 1, orderBy: {field: STARRED_AT, direction: DESC}) { edges { starredAt } }",
    "",
)
# Lists a GitHub App installation token may not read (403 "Resource not accessible by integration").
INTEGRATION_REFUSED = ("stargazers", "watchers")


# An owner's identity only: what an organisation enforcing SAML SSO still answers to a token
# it has not granted access (its other fields answer FORBIDDEN, which nulls the whole fork).
OWNER_IDENTITY = "__typename id login ... on User { databaseId } ... on Organization { databaseId }"


def _connection(relation: str, v: str, direction: str, lean: bool = False) -> str:
    args = f"first: ${v}_n, after: ${v}_a"
    if relation == "forkers":
        owner = OWNER_IDENTITY if lean else OWNER
        return (
            f"{v}: forks({args}, orderBy: {{field: CREATED_AT, direction: {direction}}}) "
            f"{{ {PAGE_INFO} nodes {{ databaseId createdAt owner {{ {owner} }} }} }}"
        )
    if relation == "stargazers":
        return (
            f"{v}: stargazers({args}, orderBy: {{field: STARRED_AT, direction: {direction}}}) "
            f"{{ {PAGE_INFO} edges {{ starredAt node {{ {USER} }} }} }}"
        )
    if relation == "watchers":
        # Edges with each item's cursor: a re-listing checks that a page read from a stored
        # boundary continues the page before it (collector ``_apply_ahead``).
        return f"{v}: watchers({args}) {{ {PAGE_INFO} edges {{ cursor node {{ {USER} }} }} }}"
    if relation in AUTHOR_CONNECTION:
        return (
            f"{v}: {AUTHOR_CONNECTION[relation]}({args}, orderBy: {{field: CREATED_AT, direction: {direction}}}) "
            f"{{ {PAGE_INFO} nodes {{ number createdAt author {{ {AUTHOR} }} }} }}"
        )
    raise ValueError(f"relation {relation!r} is not served by GraphQL")


@dataclass
class ConnectionPage:
    relation: str
    first: int
    after: str | None = None
    newest_first: bool = False
    lean: bool = False  # owners' identity only (a page whose forks a SAML organisation nulled)
    ahead: int = 0  # 0: the list's next page; k > 0: the k-th page read ahead from a stored boundary

    def alias(self, i: int) -> str:
        return f"r{i}_{self.relation}" + (f"_{self.ahead}" if self.ahead else "")


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
        """GitHub's formula for these shapes: each top-level page is one request, and so is
        each of a summary's two 1-node probes."""
        probes = 2 * sum(1 for r in self.repos if r.summary)
        return max(1, int((self.connection_count() + probes) / 100 + 0.5))

    def build(self, with_email: bool, integration: bool = False) -> tuple[str, dict]:
        """The query and its variables; ``integration``: for a GitHub App installation token,
        which may not list stargazers or watchers (the collector never gives it such pages)."""
        decls: list[str] = []
        body: list[str] = []
        variables: dict = {}
        for i, repo in enumerate(self.repos):
            decls += [f"$o{i}: String!", f"$n{i}: String!"]
            variables[f"o{i}"] = repo.owner
            variables[f"n{i}"] = repo.name
            sel: list[str] = ["databaseId nameWithOwner"]
            if repo.summary:
                sel = [SUMMARY_INTEGRATION if integration else SUMMARY]
            for page in repo.pages:
                if integration and page.relation in INTEGRATION_REFUSED:
                    raise ValueError(
                        f"a {page.relation} page was planned for a GitHub App installation token"
                    )
                v = page.alias(i)
                decls += [f"${v}_n: Int!", f"${v}_a: String"]
                variables[f"{v}_n"] = max(1, min(MAX_PAGE, int(page.first)))
                variables[f"{v}_a"] = page.after
                sel.append(_connection(page.relation, v, "DESC" if page.newest_first else "ASC", page.lean))
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
                    RepoPart(
                        "octo",
                        "watched",
                        pages=[
                            ConnectionPage("watchers", 100, "Y3Vyc29yOjE="),
                            ConnectionPage("watchers", 100, "Y3Vyc29yOjI=", ahead=1),
                        ],
                    ),
                    RepoPart("octo", "saml", pages=[ConnectionPage("forkers", 100, None, newest, lean=True)]),
                ],
                node_ids=[["U_1", "U_2"], ["O_3"]],
            )
            yield q.build(with_email)
        yield Query(repos=[RepoPart("a", "b", summary=True)]).build(with_email)
        yield Query(
            repos=[RepoPart("a", "b", summary=True, pages=[ConnectionPage("forkers", 100)])],
            node_ids=[["U_1"]],
        ).build(with_email, integration=True)
        yield Query(node_ids=[["U_1"]]).build(with_email)
