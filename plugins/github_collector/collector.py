"""Collect the users tied to a batch of repositories, one checkpointable step at a time.

The whole progress of a batch is a JSON-able ``BatchState``: per repo its resolution and,
per relation, a cursor. Each step fetches one thing (one packed GraphQL query, or one REST
page of contributors), turns it into records and hands records and the new state to the
sink together, which must store them atomically. So a crash or a quota stop loses at most
the step in flight, and a restart from the stored state fetches no staged page again.

Quota use per user, as low as GitHub allows:
- forkers, stargazers and watchers come from GraphQL pages of 100 with inline profiles, and
  several pages (of several repos) share one query: GitHub charges a query by its connections
  (sum / 100, at least 1), so ten pages cost one point;
- contributors exist only in REST (pages of 100); their profiles then come 100 node ids per
  ``nodes(ids:)`` field, several fields per query, piggybacking on connection pages when any;
- the repository summary (id, current name, counts) rides on its first GraphQL query.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from github_collector.client import GitHubClient
from github_collector.errors import (
    GitHubUnavailable,
    GraphQLError,
    GraphQLTimeout,
    NoUsableToken,
    QuotaExhausted,
    TooManyRedirects,
)
from github_collector.queries import (
    AUTHOR_RELATIONS,
    DEFAULT_MAX_AUTHOR_PAGES,
    GRAPHQL_RELATIONS,
    MAX_PAGE,
    RELATIONS,
    ConnectionPage,
    Query,
    RepoPart,
)
from github_collector.records import (
    authored_item,
    clean,
    link,
    user_from_graphql,
    user_from_identity,
    user_from_rest,
)

log = logging.getLogger(__name__)

# Repository statuses (github_repository.status).
OK, MOVED, NOT_FOUND, BLOCKED, ERROR, PENDING = "ok", "moved", "not_found", "blocked", "error", "pending"
# Relation outcomes; the first three are complete, the others are recorded as unavailable.
REL_OK, REL_EMPTY, REL_UNCHANGED = "ok", "empty", "unchanged"
REL_RESTRICTED, REL_TOO_LARGE, REL_UNAVAILABLE = "restricted", "too_large", "unavailable"
REL_PARTIAL = "partial"  # read to its end, but some items GitHub would not serve are missing
# The repository has the feature turned off (issues or discussions): nothing to list, which is
# neither a restriction nor an empty list.
REL_NOT_APPLICABLE = "not_applicable"
COMPLETE_RELATION = (REL_OK, REL_EMPTY, REL_UNCHANGED, REL_NOT_APPLICABLE)
COUNT_KEY = {
    "forkers": "forks",
    "stargazers": "stargazers",
    "watchers": "watchers",
    "issue_authors": "issues",
    "pull_request_authors": "pull_requests",
    "discussion_authors": "discussions",
}
# The summary's switch for a feature an author relation needs (pull requests cannot be off).
FEATURE = {"issue_authors": "hasIssuesEnabled", "discussion_authors": "hasDiscussionsEnabled"}
TIME_KEY = {"forkers": "createdAt", "stargazers": "starredAt"}
HIDEABLE = (
    "stargazers",
    "watchers",
)  # lists GitHub shows only to admins and collaborators  # relations with a high-water mark
SUMMARIES_PER_QUERY = 50  # summaries fill no connection, so many share one query's point
NODES_PER_SUMMARY = 20  # what a summary weighs against the node budget once GitHub pushes back

MAX_GRAPHQL_FAILURES = 8  # consecutive failed queries before the batch gives up (and Airflow retries)
MAX_PART_ERRORS = 5  # failed answers for one repository before its open lists are recorded unavailable
DEFAULT_NODE_BUDGET = 1000  # nodes per GraphQL query; halved on a 502/504
MIN_NODE_BUDGET = 10
NODES_PER_FIELD = 100  # GitHub's cap for nodes(ids:)
# Lists the scheduled complete re-listing reads again. Stars and forks need none: the summary's
# newest item and the count arithmetic after a newest-first paging tell any departure the day
# it happens; contributors are revalidated in full with ETags (a 304 is free). Watchers carry
# no time: a swap (one leaves, one joins) keeps their count and can only be seen in full.
RELISTED = ("watchers",)
EDGES = ("stargazers", "watchers")  # lists read as edges (starredAt; watchers: each item's cursor)
NEWEST = {"stargazers": ("newestStar", "edges", "starredAt"), "forkers": ("newestFork", "nodes", "createdAt")}


def relist_phase(repo_id: int, every_days: int) -> int:
    """The day (modulo ``every_days``) a repository's lists are re-listed in full: a stable hash
    of its id, so repositories spread evenly over the days and keep their day across runs."""
    return zlib.crc32(str(int(repo_id)).encode()) % every_days


def relist_due(repo_id: int | None, relation_state: dict, day: int, every_days: int) -> bool:
    """Whether a repository's lists are re-listed in full on ``day`` (a day number).

    On its phase day, or later if a run missed that day (a relation whose last complete
    listing is older than the latest phase day). A repository never stored (no id yet) is
    listed in full anyway. Relations stored before listing days were recorded wait for the
    phase day, so an upgrade does not re-list everything at once.
    """
    if repo_id is None or every_days <= 0:
        return False
    last_phase_day = day - (day - relist_phase(repo_id, every_days)) % every_days
    if last_phase_day == day:
        return True
    # Only relations that can be listed in full: a list hidden from every token (or too large)
    # never is, and must not make the repository due every day.
    listed = [
        s.get("listed")
        for rel, s in relation_state.items()
        if rel in RELISTED and isinstance(s, dict) and s.get("status") in COMPLETE_RELATION
    ]
    return any(d is not None and d < last_phase_day for d in listed)


def newer_than_stored(repo: dict, rel: str, before: dict) -> bool:
    """Whether the summary's newest item of a time-ordered list is newer than the stored mark."""
    newest = (repo.get("newest") or {}).get(rel)
    return bool(newest and before.get("hwm") and newest > before["hwm"])


def batch_state(plan: dict, index: int, previous: dict[str, dict] | None) -> dict:
    """A batch's starting state under the run's plan (``run_tasks.plan_run``): its day, the
    repositories due for a complete re-listing, and the stale profiles assigned to it."""
    full = bool(plan.get("full_refresh", False))
    return new_batch_state(
        plan["batches"][index],
        plan["relations"],
        previous,
        full,
        day=plan.get("day"),
        relist=plan.get("relist") or (),
        stale_profiles=(plan.get("stale_profiles") or {}).get(str(index)) or [],
        max_author_pages=int(plan.get("max_author_pages", DEFAULT_MAX_AUTHOR_PAGES)),
    )


def new_batch_state(
    repos: Iterable[str],
    relations: Iterable[str],
    previous: dict[str, dict] | None = None,
    full_refresh: bool = False,
    *,
    day: int | None = None,
    relist: Iterable[str] = (),
    stale_profiles: Iterable[list] = (),
    max_author_pages: int = DEFAULT_MAX_AUTHOR_PAGES,
) -> dict:
    """A batch's starting state. ``previous`` maps a requested name to what the last run
    stored about it (``relation_state``), which lets unchanged relations cost nothing.

    ``relist`` names repositories whose lists are read in full this run whatever their counts
    (the scheduled re-listing that notices users who left); ``day`` is the run's day number,
    recorded as the day a relation was last listed in full. ``stale_profiles`` are
    ``[node_id, user_id, login, type]`` of stored users whose profiles are to be fetched again.
    ``max_author_pages`` caps the pages read per repository and author relation in this run
    (0: no cap); a listing it cuts short is recorded as partial and goes on in the next run.
    """
    rels = [r for r in RELATIONS if r in set(relations)]
    previous = {} if full_refresh else (previous or {})
    due = set(relist)
    pending: list[list] = []
    queued: set[int] = set()
    for entry in stale_profiles:
        if entry[1] not in queued:
            queued.add(entry[1])
            pending.append(list(entry))
    state: dict[str, Any] = {
        "repos": {},
        "pending_profiles": pending,
        "node_budget": DEFAULT_NODE_BUDGET,
        "max_author_pages": max(0, int(max_author_pages)),
    }
    for full in repos:
        owner, name = full.split("/", 1)
        state["repos"][full] = {
            "requested": full,
            "owner": owner,
            "name": name,
            "repo_id": None,
            "full_name": None,
            "status": PENDING,
            "detail": None,
            "counts": {},
            "previous": (previous.get(full) or {}).get("relation_state") or {},
            "previous_status": (previous.get(full) or {}).get("status"),
            "previous_repo_id": (previous.get(full) or {}).get("repo_id"),
            "day": day,
            "relist": full_refresh or full in due,
            "anonymous_contributors": None,
            "streams": {r: _new_stream() for r in rels},
        }
        before = state["repos"][full]["previous"]
        for rel in RELISTED:
            # The page boundaries of the last complete listing: its pages can be read at once.
            bounds = (before.get(rel) or {}).get("bounds") if isinstance(before.get(rel), dict) else None
            if rel in state["repos"][full]["streams"] and bounds:
                state["repos"][full]["streams"][rel]["ahead"] = [str(b) for b in bounds]
    return state


def _new_stream() -> dict:
    # cursor: GraphQL endCursor or REST next URL; stop_at: stored high-water mark to page back
    # to (newest first); hwm: newest timestamp seen so far; seen: REST pages read (loop guard).
    # tried: tokens that saw the list hidden (another token may be a collaborator).
    # lean: the page at ``cursor`` had items nulled by an error (a SAML organisation's fork):
    # it is read again asking only what still answers. partial: some items stayed missing.
    # ahead: stored page boundaries of the last complete listing still to be read ahead from;
    # marks: this listing's page boundaries, kept for the next one (watchers only).
    # gap: a capped newest-first author listing's unread range: where it goes on (cursor),
    # down to which mark (floor), and the newest item it saw at its start (top, the next mark).
    # stored: the cursor this run took from the last one (a refused one falls back).
    return {
        "cursor": None,
        "done": False,
        "lean": False,
        "partial": False,
        "status": None,
        "pages": 0,
        "seen": [],
        "stop_at": None,
        "hwm": None,
        "tried": [],
        "ahead": [],
        "marks": [],
        "gap": None,
        "stored": None,
    }


def all_not_found(errors: list[dict]) -> bool:
    return bool(errors) and all(e.get("type") == "NOT_FOUND" for e in errors)


def too_big(errors: list[dict]) -> bool:
    """GitHub nulled part of the answer because the query was too expensive: ask less."""
    return any(e.get("type") == "RESOURCE_LIMITS_EXCEEDED" for e in errors)


def _under(errors: list[dict], prefix: list) -> list[dict]:
    return [e for e in errors if (e.get("path") or [])[: len(prefix)] == prefix]


def _messages(errors: list[dict]) -> str:
    return "; ".join(sorted({str(e.get("message", ""))[:120] for e in errors})) or "no error given"


def is_finished(state: dict) -> bool:
    return (
        not state["pending_profiles"]
        and all(s["done"] for r in state["repos"].values() for s in r["streams"].values())
        and all(r["status"] != PENDING for r in state["repos"].values())
    )


@dataclass
class Step:
    """What one fetch produced; the sink stores it together with ``state``."""

    state: dict
    users: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    repos: list[dict] = field(default_factory=list)
    cost: dict[str, int] = field(default_factory=dict)
    pages: int = 0


class Sink(Protocol):
    def write(self, step: Step) -> None: ...


def repo_record(repo: dict) -> dict:
    """The github_repository row for a repo's current state.

    ``listed_complete`` names the relations read in full in this run (done, ``ok`` or
    ``empty``, and not paged newest first down to a stored mark): only those prove that a
    user missing from them left, which the commit records as the relation's ``removed_at``.
    An ``ok`` list counts only if it ended where its pages say a list ends: a GraphQL list on
    a page with items (a later page with none, from a token the list is hidden from, cuts it
    short), a REST list without a next link (one looping back is cut short too).
    """
    unavailable = sorted(
        rel for rel, s in repo["streams"].items() if s["done"] and s["status"] not in COMPLETE_RELATION
    )
    listed_complete = sorted(
        rel
        for rel, s in repo["streams"].items()
        if s["done"]
        and not s["stop_at"]
        and rel not in AUTHOR_RELATIONS  # authorship is history: nobody leaves those lists
        and (
            s["status"] == REL_EMPTY
            or (s["status"] == REL_OK and (s["cursor"] is not None) == (rel in GRAPHQL_RELATIONS))
        )
    )
    record = {
        "requested": repo["requested"],
        "repo_id": repo["repo_id"],
        # A repository stored before that now answers 404/451: its stored row gets the status.
        "known_repo_id": repo.get("previous_repo_id") if repo["repo_id"] is None else None,
        "full_name": repo["full_name"],
        "status": repo["status"],
        "detail": repo["detail"],
        "unavailable_relations": unavailable,
        "listed_complete": listed_complete,
        "relation_status": {rel: s["status"] for rel, s in repo["streams"].items()},
        "relation_state": {
            rel: {
                "status": s["status"],
                "count": repo["counts"].get(COUNT_KEY.get(rel, "")),
                "hwm": s["hwm"],
                "tried": s["tried"],
                # where a capped author listing goes on in the next run: oldest first (resume),
                # or newest first down to the old mark (gap), never both
                **(
                    {"resume": s.get("resume"), "gap": s["gap"] if s["status"] == REL_PARTIAL else None}
                    if rel in AUTHOR_RELATIONS
                    else {}
                ),
                # the day this relation was last listed in full (the scheduled re-listing's clock)
                "listed": repo.get("day")
                if rel in listed_complete and repo.get("day") is not None
                else ((repo.get("previous") or {}).get(rel) or {}).get("listed"),
                # the page boundaries of the last complete listing (the next one reads ahead)
                **(
                    {
                        "bounds": (s.get("marks") or [])
                        if rel in listed_complete
                        else ((repo.get("previous") or {}).get(rel) or {}).get("bounds")
                    }
                    if rel in RELISTED
                    else {}
                ),
            }
            for rel, s in repo["streams"].items()
            if s["done"]
        },
        "stargazer_count": repo["counts"].get("stargazers"),
        # direct forks (GraphQL forks.totalCount, REST forks_count), not the whole network
        "fork_count": repo["counts"].get("forks"),
        "watcher_count": repo["counts"].get("watchers"),
        "anonymous_contributors": repo.get("anonymous_contributors"),
    }
    return clean(record)  # ``detail`` carries GitHub's messages


class Collector:
    def __init__(
        self,
        client: GitHubClient,
        sink: Sink,
        *,
        page_size: int = MAX_PAGE,
        profile_is_fresh: Callable[[list[int]], set[int]] | None = None,
        wait_inline: bool = True,
    ) -> None:
        self.client = client
        # False: when no budget the batch needs can pay now, raise QuotaExhausted rather than
        # let the client sleep through a short wait, so the caller can use the wait (a fetch
        # slot reads other batches' REST lists) before sleeping or deferring itself.
        self.wait_inline = wait_inline
        self.sink = sink
        self.page_size = max(1, min(MAX_PAGE, page_size))
        self.profile_is_fresh = profile_is_fresh
        self._profiled: set[int] = set()  # users this process already has a full profile of
        self._last_spent = (client.stats.core_spent, client.stats.graphql_spent)

    def _emit(self, step: Step) -> None:
        """Hand a step to the sink with the quota the client really spent since the last one."""
        spent = (self.client.stats.core_spent, self.client.stats.graphql_spent)
        step.cost = {"core": spent[0] - self._last_spent[0], "graphql": spent[1] - self._last_spent[1]}
        self.sink.write(step)
        self._last_spent = spent

    # -- driver -------------------------------------------------------------------------------
    def run(self, state: dict, only: str | None = None) -> dict:
        """Run steps until the batch is done (or, with ``only``, has no work of that budget left).
        Quota exhaustion propagates; state is already saved."""
        while self.step(state, only):
            pass
        return state

    def step(self, state: dict, only: str | None = None) -> bool:
        """Do one unit of work and hand it to the sink. False when nothing is left (of the
        ``only`` budget, when given: a slot reads a next batch's REST lists ahead that way).

        REST and GraphQL are separate budgets: when the one the next work needs is spent, the
        step does the other's work instead (contributor pages while GraphQL waits for its reset,
        GraphQL pages and profiles while REST does), and raises QuotaExhausted, with the earliest
        moment either may send again, only when neither can go on.
        """
        if self._profiled and state["pending_profiles"]:
            # A stale profile that came inline with a list page of this process is fresh already.
            state["pending_profiles"] = [p for p in state["pending_profiles"] if p[1] not in self._profiled]
        actions = [a for a in self._actions(state) if only is None or a[0] == only]
        waits: list[QuotaExhausted] = []
        for i, (resource, act) in enumerate(actions):
            fallback = (
                only is not None or not self.wait_inline or any(r != resource for r, _ in actions[i + 1 :])
            )
            if fallback:  # a spent budget is skipped without a request (and without a wait)
                ready = self.client.quota.ready_at(self.client.fingerprints, resource)
                if ready:
                    waits.append(QuotaExhausted(resource, ready))
                    continue
            try:
                act()
                return True
            except QuotaExhausted as exc:
                waits.append(exc)
        if waits:
            raise min(waits, key=lambda e: e.reset_at)
        return False

    def _actions(self, state: dict) -> list[tuple[str, Callable[[], None]]]:
        """The next unit of work of each budget, in the order they are preferred."""
        actions: list[tuple[str, Callable[[], None]]] = []

        def add(resource: str, act: Callable[[], None]) -> None:
            if all(r != resource for r, _ in actions):
                actions.append((resource, act))

        pending = [k for k, r in state["repos"].items() if r["status"] == PENDING]
        if pending:  # first learn every repo's id, name and counts: ~1 point per 50 repos
            take = pending[: max(1, min(SUMMARIES_PER_QUERY, state["node_budget"] // NODES_PER_SUMMARY))]
            query, plan = self._summaries(state, take)
            add("graphql", lambda: self._run_graphql(state, query, plan))
        else:
            query, plan, exclude = self._plan_pages(state)
            if query.repos:

                def pages() -> None:
                    if not exclude:  # profile look-ups ride along, but not on a restricted retry
                        self._attach_profiles(state, query)
                    self._run_graphql(state, query, plan, exclude)

                add("graphql", pages)
        repo = self._next_contributors(state)
        if repo is not None and len(state["pending_profiles"]) < state["node_budget"]:
            add("core", lambda: self._contributors_page(state, repo))
        if state["pending_profiles"]:

            def profiles() -> None:
                query = Query()
                self._attach_profiles(state, query)
                self._run_graphql(state, query, [])

            add("graphql", profiles)
        if repo is not None:
            add("core", lambda: self._contributors_page(state, repo))
        return actions

    # -- planning -----------------------------------------------------------------------------
    @staticmethod
    def _part(repo: dict, summary: bool = False, pages: list[ConnectionPage] | None = None) -> RepoPart:
        owner, name = (repo["full_name"] or repo["requested"]).split("/", 1)
        return RepoPart(owner, name, summary=summary, pages=pages or [])

    def _summaries(self, state: dict, take: list[str]) -> tuple[Query, list[tuple[str, list[str]]]]:
        """The summaries of ``take``, with the pages of the lists due for their scheduled
        re-listing riding along: GitHub charges the summaries' 100 probe connections 1 point,
        and up to 49 more pages keep it at 1, so the re-listing's first pages (all of a list's
        pages when its stored boundaries allow reading ahead) cost nothing of their own. The
        summaries weigh about one page against the node budget."""
        first = max(1, min(self.page_size, state["node_budget"]))
        room = state["node_budget"] // first - 1
        query, plan = Query(), []
        for key in take:
            repo = state["repos"][key]
            pages: list[ConnectionPage] = []
            rels: list[str] = []
            for rel in RELISTED:
                stream = repo["streams"].get(rel)
                before = (repo.get("previous") or {}).get(rel) or {}
                if (
                    room > 0
                    and repo.get("relist")
                    and stream is not None
                    and not stream["done"]
                    and stream["cursor"] is None
                    and not stream["tried"]
                    # a summary may go out on a GitHub App token, which may not list watchers
                    and not self._blind(rel)
                    and before.get("status") in COMPLETE_RELATION
                ):
                    added = [ConnectionPage(rel, first), *self._ahead_pages(stream, rel, first, room - 1)]
                    pages += added
                    rels.append(rel)
                    room -= len(added)
            query.repos.append(self._part(repo, summary=True, pages=pages))
            plan.append((key, rels))
        return query, plan

    def _plan_pages(self, state: dict) -> tuple[Query, list[tuple[str, list[str]]], frozenset[str]]:
        """Pack the next page of as many open (repo, relation) streams as the node budget allows.

        Streams that some token saw hidden are retried with the other tokens only, so they
        are packed with streams that exclude the same tokens.
        """
        budget = state["node_budget"]
        first = max(1, min(self.page_size, budget))
        room = max(1, budget // first)
        query = Query()
        plan: list[tuple[str, list[str]]] = []
        exclude: frozenset[str] | None = None
        for key, repo in state["repos"].items():
            if room <= 0:
                break
            if repo["status"] not in (OK, MOVED):
                continue
            rels = []
            for r in GRAPHQL_RELATIONS:
                stream = repo["streams"].get(r)
                if stream is None or stream["done"] or len(rels) >= room:
                    continue
                tried = frozenset(stream["tried"]) | self._blind(r)
                if exclude is None:
                    exclude = tried
                if tried == exclude:
                    rels.append(r)
            if not rels:
                continue
            pages = [
                ConnectionPage(
                    r,
                    first,
                    repo["streams"][r]["cursor"],
                    bool(repo["streams"][r]["stop_at"]),
                    lean=bool(repo["streams"][r]["lean"]),
                )
                for r in rels
            ]
            room -= len(rels)
            for r in rels:
                extra = self._ahead_pages(repo["streams"][r], r, first, room)
                pages += extra
                room -= len(extra)
            query.repos.append(self._part(repo, pages=pages))
            plan.append((key, rels))
        return query, plan, exclude or frozenset()

    def _blind(self, rel: str) -> frozenset[str]:
        """Pool members that cannot read this list whatever the repository: GitHub App
        installation tokens get 403 "Resource not accessible by integration" for stargazers and
        watchers. They count as having seen it hidden, so PATs read it, or it is restricted."""
        return self.client.integration_fps if rel in HIDEABLE else frozenset()

    def _ahead_pages(self, stream: dict, rel: str, first: int, room: int) -> list[ConnectionPage]:
        """Pages of a list read from the start, requested at once from the boundaries its last
        complete listing stored: a list's pages no longer wait for each other, so they pack
        with other lists' pages (GitHub charges a query by its pages, not by their order).
        Only at the page size the boundaries were stored with; ``_apply_ahead`` checks them."""
        ahead = stream.get("ahead") or []
        if not ahead or room <= 0 or first != MAX_PAGE or self.page_size != MAX_PAGE or stream["stop_at"]:
            return []
        return [ConnectionPage(rel, first, after, ahead=k + 1) for k, after in enumerate(ahead[:room])]

    def _attach_profiles(self, state: dict, query: Query) -> None:
        budget = max(0, state["node_budget"] - query.node_count())
        pending = state["pending_profiles"]
        take = min(len(pending), max(budget, NODES_PER_FIELD if not query.repos else 0))
        ids = [p[0] for p in pending[:take]]
        query.node_ids = [ids[i : i + NODES_PER_FIELD] for i in range(0, len(ids), NODES_PER_FIELD)]

    def _next_contributors(self, state: dict) -> dict | None:
        """The next repository with contributor pages to read: resolved ones first, then one
        whose summary is not read yet (its REST list needs only the name, so REST need not wait
        for GraphQL), unless the last run found it gone or its list too large."""
        early = None
        for repo in state["repos"].values():
            s = repo["streams"].get("contributors")
            if not s or s["done"]:
                continue
            if repo["status"] in (OK, MOVED):
                return repo
            if (
                early is None
                and repo["status"] == PENDING
                and repo.get("previous_status") in (None, OK, MOVED)
                and ((repo.get("previous") or {}).get("contributors") or {}).get("status") != REL_TOO_LARGE
            ):
                early = repo
        return early

    # -- GraphQL ------------------------------------------------------------------------------
    def _run_graphql(
        self,
        state: dict,
        query: Query,
        plan: list[tuple[str, list[str]]],
        exclude: frozenset[str] = frozenset(),
    ) -> None:
        try:
            resp = self.client.graphql(query.build, cost=query.estimated_cost(), exclude=exclude)
        except NoUsableToken:
            if not exclude:
                raise
            # Only tokens that already saw these lists hidden are left usable (the others were
            # rejected): the lists stay restricted, and the batch goes on with the rest.
            for key, rels in plan:
                for rel in rels:
                    state["repos"][key]["streams"][rel].update(done=True, status=REL_RESTRICTED)
            self._emit(Step(state=state, repos=[repo_record(state["repos"][k]) for k, _ in plan]))
            return
        except GraphQLTimeout as exc:
            # GitHub gave up on the query; it still cost quota. Ask for half as much next time.
            self._shrink(state, str(exc))
            self._emit(Step(state=state))
            return
        data = resp.data or {}
        if too_big(resp.errors):
            # Partial data with the expensive part nulled: keep what came, ask less next time.
            self._shrink(state, "GraphQL answered RESOURCE_LIMITS_EXCEEDED")
            # Unlike a timeout, the same size would be refused again: it is the new ceiling.
            state["node_ceiling"] = state["node_budget"]
        else:
            state["graphql_failures"] = 0
        by_alias: dict[str, list[dict]] = {}
        for err in resp.errors:
            path = err.get("path") or []
            if path:
                by_alias.setdefault(str(path[0]), []).append(err)
        step = Step(state=state)
        unexplained = [e for e in resp.errors if not e.get("path")]
        if unexplained and not data:
            raise GraphQLError(unexplained)

        refused = self._refused_boundaries(state, query, plan, resp.errors)
        refused = self._refused_stored(state, plan, resp.errors) or refused
        for i, (key, rels) in enumerate(plan):
            repo = state["repos"][key]
            node = data.get(f"r{i}")
            errors = by_alias.get(f"r{i}", [])
            if refused and node is None:
                continue  # nulled with the refused boundaries, maybe by them: asked again without
            if node is None and too_big(errors):
                continue  # nulled for the query's size, not for the repository: asked again, smaller
            if node is None and repo["status"] != PENDING and not all_not_found(errors):
                # A repository already resolved failed this time (GitHub answers a part it could
                # not serve with null and an error): ask again, a bounded number of times.
                repo["part_errors"] = repo.get("part_errors", 0) + 1
                if repo["part_errors"] >= MAX_PART_ERRORS:
                    repo["detail"] = f"GraphQL kept failing: {_messages(errors)}"
                    # Only the lists GraphQL serves: a GraphQL failure says nothing of REST's.
                    self._close_all(repo, REL_UNAVAILABLE, GRAPHQL_RELATIONS)
                step.repos.append(repo_record(repo))
                continue
            if node is None:
                if all_not_found(errors):
                    # GraphQL follows renames, so NOT_FOUND means gone or private: no REST call needed.
                    repo["status"] = NOT_FOUND
                    repo["detail"] = str(errors[0].get("message", ""))[:200]
                elif repo.get("previous_status") == BLOCKED:
                    repo["status"] = BLOCKED  # still refused by GraphQL: no need to ask REST why again
                    repo["detail"] = str((errors or [{}])[0].get("message", ""))[:200]
                else:
                    self._resolve_via_rest(repo, errors)
                if repo["status"] not in (OK, MOVED):
                    self._close_all(repo, REL_UNAVAILABLE)
                self._early_links(repo, step)
                step.repos.append(repo_record(repo))
                continue
            if repo["status"] == PENDING:
                self._apply_summary(repo, node)
                self._early_links(repo, step)
            failed_lists = 0
            for rel in rels:
                if repo["streams"][rel]["done"]:
                    continue  # a page that rode along with the summary, of a list it says is empty
                conn = node.get(f"r{i}_{rel}")
                rel_errors = _under(errors, [f"r{i}", f"r{i}_{rel}"])
                if conn is None and too_big(rel_errors):
                    continue  # asked again in a smaller query
                if conn is None and rel_errors:
                    failed_lists += 1  # this page failed (null with an error): ask again, bounded below
                    if repo.get("part_errors", 0) + 1 < MAX_PART_ERRORS:
                        continue
                if rel in AUTHOR_RELATIONS and conn is not None:
                    self._apply_authored(state, repo, rel, conn, step)
                else:
                    self._apply_connection(repo, rel, conn, step, resp.token, rel_errors)
                    self._apply_ahead(repo, rel, conn, node, query.repos[i], i, step, resp.token, errors)
            repo["part_errors"] = repo.get("part_errors", 0) + 1 if failed_lists else 0
            step.repos.append(repo_record(repo))

        # Profiles asked for by node id (contributors). A null slot is a user GitHub no
        # longer has: keep the list-item record we staged, drop it from pending. A whole
        # field that failed (null, with an error) is asked again.
        # Ids to ask again: a whole field that came back null, or one item nulled with an error
        # (GitHub could not serve it). A null item without an error is an account that is gone.
        # NOT_FOUND for one id is an account deleted or suspended: asking again does not bring
        # it back, so it is recorded as gone (with what its list item told) and not asked again.
        retry: set[str] = set()
        gone: set[str] = set()
        for j, ids in enumerate(query.node_ids):
            if data.get(f"u{j}") is None:
                retry.update(ids)
            for err in by_alias.get(f"u{j}", []):
                path = err.get("path") or []
                if len(path) > 1 and isinstance(path[1], int) and path[1] < len(ids):
                    (gone if err.get("type") == "NOT_FOUND" else retry).add(ids[path[1]])
        for entry in state["pending_profiles"]:
            if entry[0] in gone - retry and len(entry) >= 3:
                rec = user_from_identity(
                    {"databaseId": entry[1], "node_id": entry[0], "login": entry[2], "type": entry[3]},
                    gone=True,
                )
                if rec:
                    step.users.append(rec)
        if gone:
            log.info("%d account(s) GitHub no longer serves recorded as gone", len(gone - retry))
        state["profile_errors"] = state.get("profile_errors", 0) + 1 if retry else 0
        if state["profile_errors"] >= MAX_PART_ERRORS:  # bounded: give up on those, keep list items
            log.warning("profile look-ups kept failing: %s", _messages(resp.errors))
            state["profile_errors"], retry = 0, set()
        asked = {nid for ids in query.node_ids for nid in ids} - retry
        for j in range(len(query.node_ids)):
            for node in data.get(f"u{j}") or []:
                rec = user_from_graphql(node) if node else None
                if rec:
                    step.users.append(rec)
                    self._profiled.add(rec["user_id"])
        state["pending_profiles"] = [p for p in state["pending_profiles"] if p[0] not in asked]
        ceiling = state.get("node_ceiling") or DEFAULT_NODE_BUDGET
        if state["node_budget"] < ceiling and not resp.errors:
            state["node_budget"] = min(ceiling, state["node_budget"] * 2)
        self._emit(step)

    @staticmethod
    def _refused_boundaries(
        state: dict, query: Query, plan: list[tuple[str, list[str]]], errors: list[dict]
    ) -> bool:
        """Whether GitHub refused a page read ahead from a stored boundary (a cursor it no longer
        takes). Its error nulls the repository (the connection is non-null), perhaps more: those
        lists drop their stored boundaries and go on page by page, and what was nulled is asked
        again, neither counted as a failure nor taken for a repository GitHub has no more."""
        refused = False
        for i, (key, _) in enumerate(plan):
            ahead = {p.alias(i): p.relation for p in query.repos[i].pages if p.ahead}
            for err in errors:
                path = err.get("path") or []
                if len(path) > 1 and path[0] == f"r{i}" and path[1] in ahead:
                    refused = True
                    state["repos"][key]["streams"][ahead[path[1]]]["ahead"] = []
                    log.info(
                        "%s: a stored page boundary refused (%s); reading page by page", key, _messages([err])
                    )
        return refused

    @staticmethod
    def _refused_stored(state: dict, plan: list[tuple[str, list[str]]], errors: list[dict]) -> bool:
        """Whether GitHub refused an author page at the cursor the last run stored (its gap's or
        its resume point). Such a list starts again from the top, down to the mark it still
        has (newest first) or from the oldest: items are read again, none is lost, and the
        listing stays partial until read down to its mark. What was nulled is asked again."""
        refused = False
        for i, (key, rels) in enumerate(plan):
            for rel in rels:
                stream = state["repos"][key]["streams"][rel]
                if (
                    rel not in AUTHOR_RELATIONS
                    or not stream["stored"]
                    or stream["cursor"] != stream["stored"]
                ):
                    continue
                errs = [e for e in errors if (e.get("path") or [])[:2] == [f"r{i}", f"r{i}_{rel}"]]
                if not errs:
                    continue
                refused = True
                gap = stream["gap"]
                stream.update(cursor=None, stored=None, gap=None)
                if gap:
                    stream.update(stop_at=gap["floor"], hwm=gap["floor"])
                log.info(
                    "%s %s: the stored cursor refused (%s); reading from the %s",
                    key,
                    rel,
                    _messages(errs),
                    "newest down to the old mark" if gap else "oldest",
                )
        return refused

    @staticmethod
    def _shrink(state: dict, why: str) -> None:
        """Halve the next queries' node budget, but not forever: a query that fails even at the
        smallest size is an outage, raised for Airflow to retry later."""
        failures = state.get("graphql_failures", 0) + 1
        if failures > MAX_GRAPHQL_FAILURES:
            raise GitHubUnavailable(f"GraphQL failed {failures - 1} times in a row: {why}")
        state["graphql_failures"] = failures
        state["node_budget"] = max(MIN_NODE_BUDGET, state["node_budget"] // 2)
        log.warning("%s; node budget now %s", why, state["node_budget"])

    @staticmethod
    def _early_links(repo: dict, step: Step) -> None:
        """Links of contributor pages read before the summary, now that the repository id is
        known (dropped if the repository turned out gone: it has no id to link to)."""
        early = repo["streams"].get("contributors", {}).pop("early", None)
        if early and repo["repo_id"] is not None and repo["status"] in (OK, MOVED):
            step.links.extend(link(repo["repo_id"], uid, "contributors", contributions=n) for uid, n in early)

    def _apply_summary(self, repo: dict, node: dict) -> None:
        repo["repo_id"] = int(node["databaseId"])
        repo["full_name"] = node["nameWithOwner"]
        moved = node["nameWithOwner"].lower() != repo["requested"].lower()
        repo["status"] = MOVED if moved else OK
        if moved:
            repo["detail"] = f"moved to {node['nameWithOwner']}"
        repo["counts"] = {
            "stargazers": node.get("stargazerCount"),
            # forkCount counts the whole fork network (forks of forks too); the forkers list is
            # the direct forks, so their own count is what says it is unchanged or empty.
            "forks": (node.get("directForks") or {}).get("totalCount"),
            "fork_network": node.get("forkCount"),
            "watchers": (node.get("watcherTotal") or {}).get("totalCount"),
            "issues": (node.get("issueTotal") or {}).get("totalCount"),
            "pull_requests": (node.get("pullRequestTotal") or {}).get("totalCount"),
            "discussions": (node.get("discussionTotal") or {}).get("totalCount"),
        }
        repo["features"] = {f: node.get(f) for f in FEATURE.values()}
        repo["newest"] = {}
        for rel, (alias, items, when) in NEWEST.items():
            first = ((node.get(alias) or {}).get(items) or [None])[0]
            repo["newest"][rel] = (first or {}).get(when)
        self._decide_streams(
            repo, bool(node.get("isEmpty")), set(self.client.fingerprints), set(self.client.integration_fps)
        )

    @staticmethod
    def _decide_streams(repo: dict, is_empty: bool, tokens: set[str], blind: set[str] = frozenset()) -> None:
        """Skip what the counts prove empty or unchanged; page only the news where possible.

        ``blind``: GitHub App installations, which may not list stargazers or watchers: with
        nothing else in the pool those lists are restricted at once, without a request."""
        prev = repo.get("previous") or {}
        relist = bool(repo.get("relist"))
        for rel, stream in repo["streams"].items():
            if rel in HIDEABLE and tokens and tokens <= blind and repo["counts"].get(COUNT_KEY[rel]):
                stream.update(done=True, status=REL_RESTRICTED, tried=sorted(tokens))
                continue
            before = prev.get(rel) or {}
            # A scheduled complete re-listing trusts no stored count or mark: a user who left
            # while another joined leaves the count unchanged, and paging newest first down to
            # the mark never sees who left.
            complete_before = before.get("status") in COMPLETE_RELATION and not (relist and rel in RELISTED)
            if rel == "contributors":
                if is_empty:
                    stream.update(done=True, status=REL_EMPTY)
                elif before.get("status") == REL_TOO_LARGE:
                    stream.update(
                        done=True, status=REL_TOO_LARGE
                    )  # histories only grow; full_refresh asks again
                continue  # REST with ETags: an unchanged list answers 304, which is free
            if rel in AUTHOR_RELATIONS:
                Collector._decide_authored(repo, rel, stream, before)
                continue
            count = repo["counts"].get(COUNT_KEY[rel])
            stream["hwm"] = before.get("hwm")
            if count == 0:
                stream.update(done=True, status=REL_EMPTY)
            elif (
                complete_before and before.get("count") == count and not newer_than_stored(repo, rel, before)
            ):
                stream.update(done=True, status=REL_UNCHANGED)
            elif (
                before.get("status") == REL_RESTRICTED
                and before.get("count") == count
                and tokens <= set(before.get("tried") or ())
            ):
                # Hidden from every token we have, and nothing changed: asking again costs
                # quota and tells nothing. A new token or a new count asks again.
                stream.update(done=True, status=REL_RESTRICTED, tried=sorted(before["tried"]))
            elif complete_before and before.get("count") == count:
                # Someone joined, yet the count stayed: someone left too. Only a complete
                # listing tells who, so it is read in full today.
                log.info(
                    "%s %s: an item of %s, newer than the stored %s, with an unchanged count: listing it in full",
                    repo["full_name"],
                    rel,
                    (repo.get("newest") or {}).get(rel),
                    before.get("hwm"),
                )
            elif complete_before and rel in TIME_KEY and before.get("hwm"):
                stream["stop_at"] = before["hwm"]  # newest first, until what is already stored
                stream["base_count"] = before.get("count")

    @staticmethod
    def _decide_authored(repo: dict, rel: str, stream: dict, before: dict) -> None:
        """An author list: items are only ever added (newest last), so a complete listing is
        followed by pages newest first down to the stored mark, and an unchanged count skips
        it. Items deleted as others were created keep the count and wait for the next change:
        the mark is a creation time, so nothing newer than it is lost. A listing cut short
        by the page cap goes on from where it stopped: oldest first, or newest first down to
        the old mark (the gap), after which the mark is the gap's top."""
        count = repo["counts"].get(COUNT_KEY[rel])
        feature = FEATURE.get(rel)
        stream["hwm"] = before.get("hwm")
        if feature and (repo.get("features") or {}).get(feature) is False:
            stream.update(done=True, status=REL_NOT_APPLICABLE)
        elif count == 0:
            stream.update(done=True, status=REL_EMPTY)
        elif before.get("status") in (REL_OK, REL_UNCHANGED) and before.get("count") == count:
            stream.update(done=True, status=REL_UNCHANGED)
        elif before.get("status") in (REL_OK, REL_UNCHANGED) and before.get("hwm"):
            stream["stop_at"] = before["hwm"]
        elif before.get("status") == REL_PARTIAL and isinstance(before.get("gap"), dict):
            gap = before["gap"]
            # The mark stays the gap's floor until the gap is read: a refused cursor, or a
            # run that stops early, still pages down to it from the top.
            stream.update(cursor=gap["cursor"], stored=gap["cursor"], stop_at=gap["floor"], gap=dict(gap))
            stream["hwm"] = gap["floor"]
        elif before.get("status") == REL_PARTIAL and before.get("resume"):
            stream.update(cursor=before["resume"], stored=before["resume"])
        elif before.get("status") == REL_PARTIAL and before.get("hwm"):
            stream["stop_at"] = before["hwm"]  # capped newest first last time: down to the mark again

    def _apply_authored(self, state: dict, repo: dict, rel: str, conn: dict, step: Step) -> None:
        """One page of issues, pull requests or discussions: an item record each (the loader
        counts them per author, so reading an item twice never counts it twice), a user and a
        link for each author with an account, and the page's place in the listing."""
        stream = repo["streams"][rel]
        raw = conn.get("nodes") or []
        items = [i for i in raw if i]
        if len(items) < len(raw):  # items GitHub would not serve: never dropped silently
            stream["partial"] = True
            repo["detail"] = f"{rel}: {len(raw) - len(items)} item(s) GitHub would not serve"[:200]
        reached_stored = False
        if stream["stop_at"]:
            # Newest first: what is as new as the stored mark or newer. Items of the mark's
            # own second are read again, which the item records make harmless.
            fresh = [i for i in items if (i.get("createdAt") or "") >= stream["stop_at"]]
            reached_stored = len(fresh) < len(items)
            items = fresh
        repo_id = repo["repo_id"]
        linked: set[int] = set()
        for item in items:
            author = item.get("author")
            rec = (
                user_from_graphql(author) if author and author.get("__typename") in ("User", "Bot") else None
            )
            step.links.append(authored_item(repo_id, rel, item, rec))
            if rec:
                if rec["user_id"] not in linked:
                    linked.add(rec["user_id"])
                    step.users.append(rec)
                    step.links.append(link(repo_id, rec["user_id"], rel))
                self._profiled.add(rec["user_id"])
            ts = item.get("createdAt")
            if ts and (stream.get("newest") is None or ts > stream["newest"]):
                stream["newest"] = ts
        info = conn.get("pageInfo") or {}
        cursor = info.get("endCursor")
        stream["pages"] += 1
        step.pages += 1
        cap = state.get("max_author_pages") or 0
        capped = bool(cap) and stream["pages"] >= cap
        ended = reached_stored or not info.get("hasNextPage") or not cursor or cursor == stream["cursor"]
        if ended and stream["gap"]:
            # The gap is read down to the old mark: its top is the mark now (unless items went
            # missing, which the next run reads again from the top). What is newer than the top
            # came after the gap opened: read newest first down to it, now if the cap allows.
            top = stream["gap"]["top"]
            stream["gap"] = None
            if stream["partial"]:
                stream.update(done=True, status=REL_PARTIAL)
            elif capped:
                stream.update(done=True, status=REL_PARTIAL, hwm=top)
                repo["detail"] = f"{rel}: stopped after {stream['pages']} page(s), the per-run cap"[:200]
            else:
                stream.update(hwm=top, stop_at=top, cursor=None)
            return
        if ended:
            stream.update(done=True, status=REL_PARTIAL if stream["partial"] else REL_OK, resume=None)
            if not stream["partial"]:  # with items missing, the mark stays: the next run reads them again
                stream["hwm"] = max(filter(None, (stream["hwm"], stream.get("newest"))), default=None)
        elif capped:
            # Capped: partial, never complete. Oldest first it goes on from here next run.
            # Newest first the mark stays and what is left down to it is the gap, read from
            # here next run (with items missing, from the top again: the mark stays).
            stream.update(done=True, status=REL_PARTIAL)
            if not stream["stop_at"]:
                stream["resume"] = cursor
                stream["hwm"] = max(filter(None, (stream["hwm"], stream.get("newest"))), default=None)
            elif stream["partial"] or not stream.get("newest"):
                stream["gap"] = None
            else:
                top = stream["gap"]["top"] if stream["gap"] else stream["newest"]
                stream["gap"] = {"cursor": cursor, "floor": stream["stop_at"], "top": top}
            repo["detail"] = f"{rel}: stopped after {stream['pages']} page(s), the per-run cap"[:200]
        stream["cursor"] = cursor

    def _apply_connection(
        self,
        repo: dict,
        rel: str,
        conn: dict | None,
        step: Step,
        token: str,
        errors: list[dict] = (),  # type: ignore[assignment]
    ) -> None:
        stream = repo["streams"][rel]
        if conn is None:
            stream.update(done=True, status=REL_UNAVAILABLE)
            return
        raw = (conn.get("edges") if rel in EDGES else conn.get("nodes")) or []
        items = [i for i in raw if i]
        lean = stream["lean"]
        if len(items) < len(raw):
            # Items nulled by an error (GitHub's FORBIDDEN for a SAML organisation's profile
            # fields nulls the fork it owns): never drop them silently. The page is read once
            # more asking only what still answers; what stays missing makes the list partial.
            why = _messages(errors) if errors else "null items without an error"
            if not lean and rel == "forkers":
                log.warning(
                    "%s %s: %d item(s) nulled (%s); reading the page again leanly",
                    repo["full_name"],
                    rel,
                    len(raw) - len(items),
                    why,
                )
                self._apply_items(repo, rel, items, step, lean=False)
                stream["lean"] = True
                return
            stream["partial"] = True
            repo["detail"] = f"{rel}: {len(raw) - len(items)} item(s) GitHub would not serve: {why}"[:200]
        stream["lean"] = False
        if stream["cursor"] is None and not items:
            # GitHub hides stargazers and watchers from non-admins by returning no edges while
            # the counts stay real: an empty first page with a positive count is a restriction.
            total = max(conn.get("totalCount") or 0, repo["counts"].get(COUNT_KEY[rel]) or 0)
            if total > 0:
                stream["tried"] = sorted({*stream["tried"], token})
                if set(stream["tried"]) | self._blind(rel) >= set(self.client.fingerprints):
                    stream.update(done=True, status=REL_RESTRICTED)
            else:
                stream.update(done=True, status=REL_EMPTY)
            return
        if stream["cursor"] is not None and not items and rel in HIDEABLE:
            # The last page promised more, and this token sees none: the list is hidden from
            # it (the pages before came from a token that sees it). Never an end of the list:
            # the page is asked again of the other tokens; if none sees it, the list is partial.
            stream["tried"] = sorted({*stream["tried"], token})
            if set(stream["tried"]) | self._blind(rel) >= set(self.client.fingerprints):
                stream.update(done=True, status=REL_PARTIAL)
                repo["detail"] = f"{rel}: hidden from every token after page {stream['pages']}"
            return
        reached_stored = self._apply_items(repo, rel, items, step, lean=lean)
        if stream["stop_at"]:
            stream["joined"] = stream.get("joined", 0) + stream.pop("fresh", 0)
        info = conn.get("pageInfo") or {}
        cursor = info.get("endCursor")
        stream["pages"] += 1
        step.pages += 1
        if reached_stored or not info.get("hasNextPage") or not cursor or cursor == stream["cursor"]:
            if self._someone_left(repo, rel):
                return  # listed again in full, from the oldest
            # A cursor that does not move would loop forever: stop, keep what we have.
            stream.update(done=True, status=REL_PARTIAL if stream["partial"] else REL_OK)
        elif rel in RELISTED and self.page_size == MAX_PAGE:
            stream.setdefault("marks", []).append(cursor)  # a page boundary, for the next listing
        stream["cursor"] = cursor

    def _apply_ahead(
        self,
        repo: dict,
        rel: str,
        conn: dict | None,
        node: dict,
        part: RepoPart,
        i: int,
        step: Step,
        token: str,
        errors: list[dict],
    ) -> None:
        """After a page of a list with stored boundaries: the pages read ahead from them, each
        kept only if it continues the list. A boundary counts only if it is one of the items of
        the page before it: every item up to it was read, so the page after it is the list's
        next page, as reading one page after another would have given (items that left earlier
        in the list only make the pages overlap). A boundary missing from the page before it
        (its item left, the list changed) drops them all: the list goes on page by page."""
        stream = repo["streams"][rel]
        pages = [p for p in part.pages if p.relation == rel and p.ahead]
        while not stream["done"] and stream.get("ahead"):
            bound = stream["ahead"][0]
            if bound not in {e.get("cursor") for e in ((conn or {}).get("edges") or []) if e}:
                log.info(
                    "%s %s: a stored page boundary is gone; reading page by page", repo["full_name"], rel
                )
                stream["ahead"] = []
                return
            stream["ahead"].pop(0)
            stream["cursor"] = bound  # read up to it: the list goes on after it
            page = pages.pop(0) if pages else None
            conn = node.get(page.alias(i)) if page is not None and page.after == bound else None
            if conn is None:
                return  # not asked (or failed) this time: the next query reads after the boundary
            self._apply_connection(repo, rel, conn, step, token, _under(errors, [f"r{i}", page.alias(i)]))

    @staticmethod
    def _someone_left(repo: dict, rel: str) -> bool:
        """After paging newest first down to the stored mark: if the stored count plus the
        newcomers is not today's count, someone left (or joined and left again). Only a complete
        listing can tell who, so the list is read again in full at once: a departure that moves
        the count is noticed the same day (one that does not, a swap, waits for the scheduled
        re-listing)."""
        stream = repo["streams"][rel]
        base, count = stream.get("base_count"), repo["counts"].get(COUNT_KEY[rel])
        if not stream["stop_at"] or base is None or count is None or base + stream.get("joined", 0) == count:
            return False
        log.info(
            "%s %s: %s stored + %s new != %s now: someone left; listing it in full",
            repo["full_name"],
            rel,
            base,
            stream.get("joined", 0),
            count,
        )
        stream.update(cursor=None, stop_at=None, pages=0, seen=[], joined=0)
        return True

    def _apply_items(self, repo: dict, rel: str, items: list[dict], step: Step, *, lean: bool) -> bool:
        """Records of one page's items; True when the page reached the stored high-water mark.

        A lean page (owners' identity only) adds no profile: it names the owners the full page
        lost, and leaves alone those this run already has in full."""
        stream = repo["streams"][rel]
        reached_stored = False
        if stream["stop_at"]:  # newest first: keep only what is newer than the stored mark
            fresh = [i for i in items if (i.get(TIME_KEY[rel]) or "") > stream["stop_at"]]
            reached_stored = len(fresh) < len(items)
            items = fresh
            stream["fresh"] = len(fresh)
        repo_id = repo["repo_id"]
        for item in items:
            if rel == "forkers":
                owner = item.get("owner")
                if lean and owner:
                    known = owner.get("databaseId") in self._profiled
                    rec = user_from_identity(owner)
                    if rec:
                        if not known:
                            step.users.append(rec)
                        step.links.append(link(repo_id, rec["user_id"], rel, forked_at=item.get("createdAt")))
                    continue
                rec = user_from_graphql(owner) if owner else None
                if rec:
                    step.users.append(rec)
                    step.links.append(link(repo_id, rec["user_id"], rel, forked_at=item.get("createdAt")))
            elif rel == "stargazers":
                rec = user_from_graphql(item.get("node"))
                if rec:
                    step.users.append(rec)
                    step.links.append(link(repo_id, rec["user_id"], rel, starred_at=item.get("starredAt")))
            else:
                rec = user_from_graphql(item.get("node"))
                if rec:
                    step.users.append(rec)
                    step.links.append(link(repo_id, rec["user_id"], rel))
            if rec:
                self._profiled.add(rec["user_id"])
            ts = item.get(TIME_KEY.get(rel, ""), None)
            if ts and (stream["hwm"] is None or ts > stream["hwm"]):
                stream["hwm"] = ts
        return reached_stored

    def _close_all(self, repo: dict, status: str, relations: Iterable[str] | None = None) -> None:
        for rel, s in repo["streams"].items():
            if not s["done"] and (relations is None or rel in relations):
                s.update(done=True, status=status)

    def _resolve_via_rest(self, repo: dict, errors: list[dict]) -> None:
        """GraphQL could not give the repository: one REST GET says why (404, 451, moved...)."""
        try:
            resp = self.client.rest(f"/repos/{repo['requested']}", conditional=False)
        except TooManyRedirects as exc:
            repo["status"] = ERROR
            repo["detail"] = str(exc)[:200]
            return
        if resp.status == 200 and isinstance(resp.data, dict) and resp.data.get("id"):
            repo["repo_id"] = int(resp.data["id"])
            repo["full_name"] = resp.data["full_name"]
            moved = bool(resp.redirects) or resp.data["full_name"].lower() != repo["requested"].lower()
            repo["status"] = MOVED if moved else OK
            repo["counts"] = {
                "stargazers": resp.data.get("stargazers_count"),
                "forks": resp.data.get("forks_count"),  # direct forks (network_count is the network)
                "watchers": resp.data.get("subscribers_count"),
            }
            return
        repo["status"] = {404: NOT_FOUND, 451: BLOCKED}.get(resp.status, ERROR)
        if resp.status == 403 and isinstance(resp.data, dict) and isinstance(resp.data.get("block"), dict):
            repo["status"] = BLOCKED  # a terms-of-service block: 403 with a block object
        kinds = ",".join(sorted({str(e.get("type")) for e in errors})) or "none"
        repo["detail"] = f"HTTP {resp.status}: {resp.message[:200]} (GraphQL: {kinds})"

    # -- REST contributors ----------------------------------------------------------------------
    def _contributors_page(self, state: dict, repo: dict) -> None:
        stream = repo["streams"]["contributors"]
        # anon=true: GitHub links only the top 500 authors to accounts; the others come as
        # anonymous entries (no id), counted on the repository row. Same pages of 100.
        where = repo["full_name"] or repo["requested"]  # before its summary: the requested name
        url = stream["cursor"] or f"/repos/{where}/contributors?per_page={self.page_size}&anon=true"
        resolved = repo["status"] != PENDING
        step = Step(state=state)
        try:
            resp = self.client.rest(url)
        except TooManyRedirects as exc:
            stream.update(done=True, status=REL_UNAVAILABLE)
            repo["detail"] = f"contributors: {exc}"[:200]
            if resolved:
                step.repos.append(repo_record(repo))
            self._emit(step)
            return
        if resp.status == 204:
            stream.update(done=True, status=REL_EMPTY)
            repo["anonymous_contributors"] = 0
        elif resp.status == 200 and isinstance(resp.data, list):
            stream["pages"] += 1
            step.pages = 1
            fresh_needed: list[dict] = []
            for item in resp.data:
                if not item.get("id"):  # anonymous contributors carry no account: counted only
                    stream["anonymous"] = stream.get("anonymous", 0) + 1
                    continue
                rec = user_from_rest(item)
                step.users.append(rec)
                if resolved:
                    step.links.append(
                        link(
                            repo["repo_id"],
                            rec["user_id"],
                            "contributors",
                            contributions=item.get("contributions"),
                        )
                    )
                else:  # linked once the summary gives the repository's id
                    stream.setdefault("early", []).append([rec["user_id"], item.get("contributions")])
                if rec["user_id"] not in self._profiled and rec.get("node_id"):
                    fresh_needed.append(rec)
            self._queue_profiles(state, fresh_needed)
            nxt = resp.next_url
            seen = stream.setdefault("seen", [])
            seen.append(url)
            if not nxt or nxt in seen:
                stream.update(done=True, status=REL_OK if resp.data or stream["pages"] > 1 else REL_EMPTY)
                if nxt:
                    repo["detail"] = "contributors: link header points back to a page already read"
                else:  # the whole list was read: its anonymous count is exact
                    repo["anonymous_contributors"] = stream.get("anonymous", 0)
            stream["cursor"] = nxt
        elif resp.status == 403 and "too large" in resp.message.lower():
            stream.update(done=True, status=REL_TOO_LARGE)
        else:
            stream.update(done=True, status=REL_UNAVAILABLE)
            repo["detail"] = f"contributors: HTTP {resp.status} {resp.message[:200]}"
        if resolved:  # a repository is recorded once its summary is read, never as pending
            step.repos.append(repo_record(repo))
        self._emit(step)

    def _queue_profiles(self, state: dict, recs: list[dict]) -> None:
        if not recs:
            return
        fresh = self.profile_is_fresh([r["user_id"] for r in recs]) if self.profile_is_fresh else set()
        queued = {p[1] for p in state["pending_profiles"]}
        for r in recs:
            if r["user_id"] in fresh or r["user_id"] in queued:
                continue
            # login and type too: an account GitHub no longer serves is recorded from them
            state["pending_profiles"].append([r["node_id"], r["user_id"], r["login"], r["type"]])
            queued.add(r["user_id"])
