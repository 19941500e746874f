"""POST /graphql: validation, GitHub's pre-execution checks, quota, and execution over the dataset.

Objects handed to graphql-core are dicts; values that are costly or take arguments are callables,
which graphql-core's default resolver calls with (info, **args). Profile fields are computed only
when a query selects them.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    execute,
    get_nullable_type,
    get_operation_ast,
    is_list_type,
    is_non_null_type,
    parse,
    validate,
    value_from_ast_untyped,
)

from .accounting import Accounting, TokenState, Window
from .config import EmulatorConfig
from .cost import analyze
from .data import GHOST, REPO_BASE, Dataset, Repo
from .encoding import decode_cursor, decode_node_id, encode_cursor, iso, node_id
from .schema import load_schema
from .shapes import avatar_url, html_url

EMAIL_SCOPES = ("user:email", "read:user")
MAX_IDS = 100
DOCS = "https://docs.github.com/graphql"
# Injected partial failure. GitHub publishes no list of its GraphQL error types (github/docs#11071
# asks for one); SERVICE_UNAVAILABLE on a single `path`, with the rest of `data` intact, is the
# transient per-field failure that public clients of api.github.com/graphql handle, and "timedout"
# is the message GitHub gives a field that ran out of time (e.g. advanced-security/
# sbom-generator-action#4, ossf/pvtr-github-repo-scanner#77).
PARTIAL_ERROR_TYPE = "SERVICE_UNAVAILABLE"
PARTIAL_ERROR_MESSAGE = "timedout"
TIMEOUT_MESSAGE = (
    "Something went wrong while executing your query. This may be the result of a timeout, or it "
    "could be a GitHub bug. Please include `{}` when reporting this issue."
)
RESOURCE_LIMITS_MESSAGE = "Resource limits for this query exceeded."


@dataclass
class GraphQLResult:
    status: int
    payload: dict | None  # None = no body
    window: Window
    cost: int = 0
    fault: str | None = None  # the accounting FAULT_KINDS entry injected into this answer
    pages: list[str] = field(default_factory=list)  # connection pages served, for the request log
    answer: str | None = None  # the limit or error answer given (ANSWER_KINDS / NATURAL_ANSWERS)
    secondary_retry: int | None = None  # set: refused by the CPU budget, answer a secondary limit


@dataclass
class _Ctx:
    ds: Dataset
    state: TokenState
    cost: int = 0
    node_count: int = 0
    window: Window | None = None
    errors: list[dict] = field(default_factory=list)  # errors for list slots graphql-core can't mark
    pages: list[str] = field(default_factory=list)  # "owner/name:field:after" of each page served


# What a SAML-protected organisation still answers to a token not granted access to it.
SAML_OPEN_FIELDS = frozenset({"__typename", "id", "databaseId", "login", "url", "resourcePath", "avatarUrl"})
_NOT_ORG = frozenset({"User", "Bot", "Mannequin", "EnterpriseUserAccount"})


def _asks_beyond(info, allowed: frozenset[str]) -> bool:
    """Whether the selection on this field asks an organisation for more than ``allowed``."""

    def walk(selection_set) -> bool:
        for sel in selection_set.selections if selection_set else ():
            if isinstance(sel, FieldNode):
                if sel.name.value not in allowed:
                    return True
            elif isinstance(sel, InlineFragmentNode):
                cond = sel.type_condition.name.value if sel.type_condition else None
                if cond not in _NOT_ORG and walk(sel.selection_set):
                    return True
            elif isinstance(sel, FragmentSpreadNode):
                frag = info.fragments.get(sel.name.value)
                if frag and frag.type_condition.name.value not in _NOT_ORG and walk(frag.selection_set):
                    return True
        return False

    return any(walk(node.selection_set) for node in info.field_nodes)


INTEGRATION_FORBIDDEN = "Resource not accessible by integration"


def _asks_items(info) -> bool:
    """Whether a connection field's selection asks for its items (edges or nodes)."""
    for node in info.field_nodes:
        for sel in node.selection_set.selections if node.selection_set else ():
            name = getattr(getattr(sel, "name", None), "value", None)
            if name in ("edges", "nodes") or name is None:  # a fragment may ask them too
                return True
    return False


def _error(kind: str, message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"type": kind})


def _format_error(err: GraphQLError) -> dict:
    f = err.formatted
    out: dict = {}
    ext = dict(f.get("extensions") or {})
    if "type" in ext:
        out["type"] = ext.pop("type")
    if f.get("path") is not None:
        out["path"] = f["path"]
    if f.get("locations"):
        out["locations"] = f["locations"]
    out["message"] = f["message"]
    if ext:
        out["extensions"] = ext
    return out


# ---------------------------------------------------------------------- connections
def paginate(
    keys: list, *, first: int | None, last: int | None, after: tuple | None, before: tuple | None, desc: bool
) -> tuple[list[int], bool, bool]:
    """Relay pagination over ascending sort keys. Returns (indices into keys in output order,
    has_previous_page, has_next_page). Cursors are keys, so pages are stable under inserts."""
    n = len(keys)
    lo, hi = 0, n
    if desc:
        if after is not None:
            hi = bisect_left(keys, after)
        if before is not None:
            lo = bisect_right(keys, before)
    else:
        if after is not None:
            lo = bisect_right(keys, after)
        if before is not None:
            hi = bisect_left(keys, before)
    hi = max(hi, lo)
    count = hi - lo
    start, end = 0, count
    if first is not None:
        end = min(count, first)
    if last is not None:
        start = max(0, end - last)
    # position of the window in the full output order, to tell whether anything lies beyond it
    offset = (n - hi) if desc else lo
    has_prev, has_next = offset + start > 0, offset + end < n
    idx = [hi - 1 - i for i in range(start, end)] if desc else list(range(lo + start, lo + end))
    return idx, has_prev, has_next


def _cursor_arg(value: str | None) -> tuple | None:
    if value is None:
        return None
    key = decode_cursor(value)
    if key is None:
        raise _error("INVALID_CURSOR_ARGUMENTS", f"`{value}` does not appear to be a valid cursor.")
    return key


def _connection(
    keys: list,
    make_node: Callable[[int], dict],
    args: dict,
    *,
    desc: bool = False,
    total: int | None = None,
    hidden: bool = False,
    edge_extra: Callable[[int], dict] | None = None,
) -> dict:
    """Build a connection object. ``hidden``: the caller may not list these items (GitHub then
    answers with no edges but the real totalCount)."""
    empty_info = {"hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None}
    total = len(keys) if total is None else total
    if hidden:
        return {"totalCount": total, "pageInfo": empty_info, "edges": [], "nodes": []}
    try:
        idx, has_prev, has_next = paginate(
            keys,
            first=args.get("first"),
            last=args.get("last"),
            after=_cursor_arg(args.get("after")),
            before=_cursor_arg(args.get("before")),
            desc=desc,
        )
    except TypeError:  # a cursor from another ordering
        raise _error("INVALID_CURSOR_ARGUMENTS", "The cursor does not belong to this ordering.") from None
    cache: dict[int, dict] = {}

    def node(i: int) -> dict:
        if i not in cache:
            cache[i] = make_node(i)
        return cache[i]

    def edges(info) -> list[dict]:
        return [
            {"cursor": encode_cursor(keys[i]), "node": node(i), **(edge_extra(i) if edge_extra else {})}
            for i in idx
        ]

    page_info = {
        "hasNextPage": has_next,
        "hasPreviousPage": has_prev,
        "startCursor": encode_cursor(keys[idx[0]]) if idx else None,
        "endCursor": encode_cursor(keys[idx[-1]]) if idx else None,
    }
    return {
        "totalCount": total,
        "pageInfo": page_info,
        "edges": edges,
        "nodes": lambda info: [node(i) for i in idx],
    }


_REPO_ORDER = {
    "CREATED_AT": lambda r: r.created_at,
    "NAME": lambda r: r.name.lower(),
    "PUSHED_AT": lambda r: r.pushed_at or 0,
    "STARGAZERS": lambda r: len(r.stars),
    "UPDATED_AT": lambda r: r.updated_at,
}


# ---------------------------------------------------------------------- object builders
class Resolver:
    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx
        self.ds = ctx.ds
        cfg = ctx.state.config
        self.patterns = cfg.collaborator_repos if cfg else ()
        self.integration = bool(cfg and cfg.integration)

    def _repo_connection(self, repos: list[Repo], args: dict, total: int | None = None) -> dict:
        order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "ASC"}
        keyf = _REPO_ORDER[order["field"]]
        pairs = sorted(((keyf(r), r.id), r) for r in repos)
        keys = [k for k, _ in pairs]
        return _connection(
            keys, lambda i: self.repo(pairs[i][1]), args, desc=order["direction"] == "DESC", total=total
        )

    def account(self, uid: int, info=None) -> dict:
        ds = self.ds
        if info is not None and uid in ds.saml_orgs and _asks_beyond(info, SAML_OPEN_FIELDS):
            # GitHub's answer for an organisation enforcing SAML SSO the token is not granted
            # for: an error at this path, and a null that a non-null parent field passes up.
            raise _error(
                "FORBIDDEN",
                "Resource protected by organization SAML enforcement. You must grant your "
                "Personal Access token access to this organization.",
            )
        typename = ds.user_type(uid)
        login = ds.login(uid)
        memo: dict = {}

        def prof() -> dict:
            if not memo:
                memo.update(ds.profile(uid))
            return memo

        def pf(key: str, transform: Callable = lambda v: v) -> Callable:
            return lambda info: transform(prof()[key])

        obj: dict = {
            "__typename": typename,
            "id": node_id(typename, uid),
            "databaseId": uid,
            "login": login,
            "avatarUrl": lambda info, size=None: avatar_url(uid, typename) + (f"&s={size}" if size else ""),
            "url": html_url(login, typename),
            "resourcePath": html_url(login, typename).removeprefix("https://github.com"),
            "createdAt": pf("created_at", iso),
            "updatedAt": pf("updated_at", iso),
        }
        if typename == "Bot":
            return obj

        def repositories(info, **args) -> dict:
            repos = ds.owned_repos(uid)
            if args.get("isFork") is not None:
                repos = [r for r in repos if (r.parent_id is not None) == args["isFork"]]
            if args.get("privacy") == "PRIVATE":
                repos = []
            # every emulated repo is public, so privacy: PUBLIC keeps the profile count
            filtered = args.get("isFork") is not None or args.get("privacy") == "PRIVATE"
            # the profile count includes repos outside the dataset, as public_repos does on GitHub
            total = None if filtered else max(prof()["public_repos"], len(repos))
            return self._repo_connection(repos, args, total)

        obj.update(
            {
                "name": pf("name"),
                "location": pf("location"),
                "twitterUsername": pf("twitter_username"),
                "websiteUrl": pf("blog", lambda v: v or None),
                "repositories": repositories,
            }
        )
        if typename == "Organization":
            obj.update({"description": pf("bio"), "email": pf("email"), "isVerified": False})
            return obj

        def count(key: str) -> Callable:
            return lambda info, **args: {
                "totalCount": prof()[key],
                "pageInfo": {
                    "hasNextPage": False,
                    "hasPreviousPage": False,
                    "startCursor": None,
                    "endCursor": None,
                },
            }

        obj.update(
            {
                "company": pf("company"),
                "email": pf("email", lambda v: v or ""),  # String! on GitHub: "" when not public
                "bio": pf("bio"),
                "isHireable": pf("hireable", bool),
                "isSiteAdmin": pf("site_admin", bool),
                "followers": count("followers"),
                "following": count("following"),
                "gists": count("public_gists"),
            }
        )
        return obj

    def repo(self, repo: Repo) -> dict:
        ds = self.ds
        full_name = ds.full_name(repo)
        collaborator = ds.is_collaborator(self.patterns, repo)
        hidden = ds.restricted_relations(repo, self.patterns)

        def page(field_name: str, args: dict) -> None:
            # Which page this is, so a test can tell a page fetched twice from a new one.
            # Newest first, or fewer than a full page (a probe of the newest item), is another
            # page than the one of the same cursor in the default order.
            order = (args.get("orderBy") or {}).get("direction", "ASC")
            first = args.get("first")
            suffix = (":desc" if order == "DESC" else "") + (
                f":first{first}" if first and first < 100 else ""
            )
            self.ctx.pages.append(f"{full_name}:{field_name}:{args.get('after')}{suffix}")

        def forks(info, **args) -> dict:
            page("forks", args)
            order = args.get("orderBy")
            if order is None or order["field"] == "CREATED_AT":
                keys = repo.forks  # already (created_at, id) ascending
                desc = bool(order and order["direction"] == "DESC")
                return _connection(keys, lambda i: self.repo(ds.repos[keys[i][1]]), args, desc=desc)
            return self._repo_connection([ds.repos[f] for _, f in repo.forks], args)

        def refuse_integration(info, field_name: str) -> None:
            # GitHub App installation tokens may not list stargazers or watchers (2026): the
            # connection answers FORBIDDEN when its items are asked (its totalCount still works).
            if self.integration and _asks_items(info):
                self.ctx.pages.append(f"{full_name}:{field_name}:refused")
                raise _error("FORBIDDEN", INTEGRATION_FORBIDDEN)

        def stargazers(info, **args) -> dict:
            refuse_integration(info, "stargazers")
            page("stargazers", args)
            keys = repo.stars
            desc = (args.get("orderBy") or {}).get("direction") == "DESC"
            return _connection(
                keys,
                lambda i: self.account(keys[i][1]),
                args,
                desc=desc,
                hidden="stargazers" in hidden,
                edge_extra=lambda i: {"starredAt": iso(keys[i][0])},
            )

        def watchers(info, **args) -> dict:
            refuse_integration(info, "watchers")
            page("watchers", args)
            keys = repo.watchers
            return _connection(keys, lambda i: self.account(keys[i][1]), args, hidden="watchers" in hidden)

        def authored(field_name: str, relation: str, typename: str) -> Callable:
            # Issues, pull requests and discussions, by creation time. Items are never edited
            # here, so UPDATED_AT orders as CREATED_AT does; COMMENTS is not emulated.
            def resolve(info, **args) -> dict:
                page(field_name, args)
                order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "ASC"}
                if order["field"] == "COMMENTS":
                    raise _error("UNPROCESSABLE", "ordering by COMMENTS is not emulated")
                keys = ds.items(repo, relation)
                return _connection(
                    keys,
                    lambda i: self.item(repo, typename, keys[i]),
                    args,
                    desc=order["direction"] == "DESC",
                )

            return resolve

        return {
            "__typename": "Repository",
            "id": node_id("Repository", repo.id),
            "databaseId": repo.id,
            "name": repo.name,
            "nameWithOwner": full_name,
            "owner": lambda info: self.account(repo.owner_id, info),
            "createdAt": iso(repo.created_at),
            "updatedAt": iso(repo.updated_at),
            "pushedAt": iso(repo.pushed_at),
            "description": repo.description,
            "homepageUrl": repo.homepage,
            "diskUsage": repo.size,
            "isEmpty": repo.is_empty,
            "isFork": repo.parent_id is not None,
            "isPrivate": False,
            "isArchived": False,
            "visibility": "PUBLIC",
            "url": f"https://github.com/{full_name}",
            "resourcePath": f"/{full_name}",
            "stargazerCount": len(repo.stars),
            # the whole network, a fork's included (its root's forks, their forks...); the direct
            # forks are forks.totalCount
            "forkCount": ds.network_count(ds.network_root(repo)),
            "viewerPermission": "WRITE" if collaborator else "READ",
            "parent": lambda info: self.repo(ds.repos[repo.parent_id]) if repo.parent_id else None,
            "forks": forks,
            "stargazers": stargazers,
            "watchers": watchers,
            "hasIssuesEnabled": repo.has_issues,
            "hasDiscussionsEnabled": repo.has_discussions,
            "issues": authored("issues", "issue_authors", "Issue"),
            "pullRequests": authored("pullRequests", "pull_request_authors", "PullRequest"),
            "discussions": authored("discussions", "discussion_authors", "Discussion"),
        }

    def item(self, repo: Repo, typename: str, key: tuple[int, int, int]) -> dict:
        """An issue, pull request or discussion: its number, creation time and author (null for
        a deleted account, a Mannequin in an imported repository, else a User or a Bot)."""
        created, number, author = key
        path = {"Issue": "issues", "PullRequest": "pull", "Discussion": "discussions"}[typename]
        resource = f"/{self.ds.full_name(repo)}/{path}/{number}"
        dbid = (repo.id - REPO_BASE) * 100_000 + number
        return {
            "__typename": typename,
            "id": node_id(typename, dbid),
            "databaseId": dbid,
            "number": number,
            "createdAt": iso(created),
            "resourcePath": resource,
            "url": f"https://github.com{resource}",
            "author": lambda info: None if author == GHOST else self.actor(author, info),
        }

    def actor(self, uid: int, info=None) -> dict:
        login = self.ds.mannequins.get(uid)
        if login is None:
            return self.account(uid, info)
        return {
            "__typename": "Mannequin",
            "id": node_id("Mannequin", uid),
            "databaseId": uid,
            "login": login,
            "avatarUrl": lambda info, size=None: f"https://avatars.githubusercontent.com/u/{uid}?v=4",
            "url": f"https://github.com/{login}",
            "resourcePath": f"/{login}",
            "createdAt": iso(1_600_000_000),
            "updatedAt": iso(1_600_000_000),
        }

    def node(self, value: str) -> dict | None:
        """Resolve a global id; raises GraphQLError (NOT_FOUND / FORBIDDEN) for a miss."""
        decoded = decode_node_id(value)
        not_found = _error("NOT_FOUND", f"Could not resolve to a node with the global id of '{value}'")
        if decoded is None:
            raise not_found
        typename, dbid = decoded
        if typename == "Repository":
            repo = self.ds.repos.get(dbid)
            if repo is None:
                raise not_found
            if repo.kind == "blocked":
                raise _error("FORBIDDEN", "Repository access blocked")
            return self.repo(repo)
        if self.ds.user_type(dbid) != typename or dbid in self.ds.deleted:
            raise not_found
        return self.account(dbid)

    # ------------------------------------------------------------------ root fields
    def root(self) -> dict:
        ds, ctx = self.ds, self.ctx

        def repository(info, owner: str, name: str, followRenames: bool = True) -> dict | None:
            repo, _ = ds.lookup(owner, name, follow_renames=followRenames)
            if repo is None:
                raise _error(
                    "NOT_FOUND", f"Could not resolve to a Repository with the name '{owner}/{name}'."
                )
            if repo.kind == "blocked":
                raise _error("FORBIDDEN", "Repository access blocked")
            return self.repo(repo)

        def account(kind: str) -> Callable:
            def resolve(info, login: str) -> dict | None:
                uid = ds.user_id(login)
                if uid is None or ds.user_type(uid) != kind:
                    what = "User" if kind == "User" else "Organization"
                    raise _error(
                        "NOT_FOUND",
                        f"Could not resolve to a{'n' * (what[0] == 'O')} {what} with the login of '{login}'.",
                    )
                return self.account(uid)

            return resolve

        def nodes(info, ids: list[str]) -> list[dict | None]:
            if len(ids) > MAX_IDS:
                raise _error(
                    "EXCESSIVE_PAGINATION",
                    f"You may not request more than {MAX_IDS} ids at once, but requested {len(ids)}.",
                )
            out: list[dict | None] = []
            base = info.path.as_list()
            for i, value in enumerate(ids):
                try:
                    out.append(self.node(value))
                except GraphQLError as err:
                    out.append(None)
                    ctx.errors.append(
                        {
                            "type": err.extensions["type"],
                            "path": [*base, i],
                            "locations": [
                                {
                                    "line": n.loc.source.get_location(n.loc.start).line,
                                    "column": n.loc.source.get_location(n.loc.start).column,
                                }
                                for n in info.field_nodes
                                if n.loc
                            ],
                            "message": err.message,
                        }
                    )
            return out

        def rate_limit(info, dryRun: bool = False) -> dict:
            w = ctx.window
            return {
                "cost": ctx.cost,
                "limit": w.limit,
                "nodeCount": ctx.node_count,
                "remaining": w.remaining,
                "resetAt": iso(w.reset),
                "used": w.used,
            }

        return {
            "repository": repository,
            "user": account("User"),
            "organization": account("Organization"),
            "node": lambda info, id: self.node(id),
            "nodes": nodes,
            "rateLimit": rate_limit,
            "viewer": lambda info: self.account(ds.viewer_id(ctx.state.account_name)),
        }


def _too_many_ids(document: DocumentNode, operation_name: str | None, variables: dict) -> int:
    """The number of ids of a root nodes(ids:) over GitHub's limit of 100, else 0."""
    op = get_operation_ast(document, operation_name)
    if op is None:
        return 0
    values = dict(variables)
    for var in op.variable_definitions or ():
        if var.variable.name.value not in values and var.default_value is not None:
            values[var.variable.name.value] = value_from_ast_untyped(var.default_value)
    for sel in op.selection_set.selections:
        if isinstance(sel, FieldNode) and sel.name.value == "nodes":
            for a in sel.arguments or ():
                if a.name.value == "ids":
                    ids = value_from_ast_untyped(a.value, values)
                    if isinstance(ids, list) and len(ids) > MAX_IDS:
                        return len(ids)
    return 0


def _items(value: object) -> int:
    """How many list items (connection nodes included) a result value holds, nested ones too."""
    if isinstance(value, list):
        return sum(1 + _items(v) for v in value if v is not None)
    if isinstance(value, dict):
        lists = [value[k] for k in ("nodes", "edges") if isinstance(value.get(k), list)]
        rest = sum(_items(v) for k, v in value.items() if k not in ("nodes", "edges"))
        return max((_items(v) for v in lists), default=0) + rest
    return 0


def _null_largest_list(payload: dict) -> bool:
    """RESOURCE_LIMITS_EXCEEDED: null the list or connection field holding the most items (the
    outermost one on a tie) where it stands, keep the rest of data, and add GitHub's error."""
    best: tuple[int, list, dict | None, str | None] = (-1, [], None, None)

    def walk(value: object, path: list) -> None:
        nonlocal best
        if isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, [*path, i])
            return
        if not isinstance(value, dict):
            return
        for key, child in value.items():
            is_connection = isinstance(child, dict) and any(
                isinstance(child.get(k), list) for k in ("nodes", "edges")
            )
            if isinstance(child, list) or is_connection:
                n = _items(child)
                if n > best[0]:
                    best = (n, [*path, key], value, key)
            walk(child, [*path, key])

    data = payload.get("data")
    walk(data, [])
    _, path, parent, key = best
    if parent is None or key is None:
        return False
    parent[key] = None
    error = {"type": "RESOURCE_LIMITS_EXCEEDED", "path": path, "message": RESOURCE_LIMITS_MESSAGE}
    payload.setdefault("errors", []).append(error)
    return True


def _type_resolver(value: dict, info, abstract_type) -> str:
    return value["__typename"]


def _only_rate_limit(document, operation_name: str | None):
    """For rateLimit(dryRun: true): keep only the rateLimit selections of the operation
    (AST nodes are frozen, hence the copies)."""
    definitions = []
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None or (definition.name and definition.name.value == operation_name)
        ):
            kept = tuple(
                s
                for s in definition.selection_set.selections
                if isinstance(s, FieldNode) and s.name.value in ("rateLimit", "__typename")
            )
            definition = replace(definition, selection_set=replace(definition.selection_set, selections=kept))
        definitions.append(definition)
    return replace(document, definitions=tuple(definitions))


class GraphQLApi:
    def __init__(self, ds: Dataset, accounting: Accounting, config: EmulatorConfig) -> None:
        self.ds = ds
        self.acc = accounting
        self.config = config
        self.schema = load_schema()

    def _null_one_field(self, document: DocumentNode, operation_name: str | None, payload: dict) -> bool:
        """The partial-failure fault: null the first top-level field that may be null (or, for a
        non-null list such as nodes(ids:), its first item) and add the error GitHub would send."""
        data = payload.get("data")
        op = get_operation_ast(document, operation_name)
        if not isinstance(data, dict) or op is None:
            return False
        fields = self.schema.query_type.fields
        for sel in op.selection_set.selections:
            if (
                not isinstance(sel, FieldNode)
                or sel.name.value not in fields
                or sel.name.value == "rateLimit"
            ):
                continue
            key = sel.alias.value if sel.alias else sel.name.value
            value = data.get(key)
            if value is None:
                continue
            ftype = fields[sel.name.value].type
            if not is_non_null_type(ftype):
                data[key], path = None, [key]
            elif (
                is_list_type(get_nullable_type(ftype))
                and not is_non_null_type(get_nullable_type(ftype).of_type)
                and value
            ):
                value[0], path = None, [key, 0]
            else:  # a null here would null the whole of data, which is the other fault
                continue
            error: dict = {"type": PARTIAL_ERROR_TYPE, "path": path}
            if sel.loc:
                where = sel.loc.source.get_location(sel.loc.start)
                error["locations"] = [{"line": where.line, "column": where.column}]
            error["message"] = PARTIAL_ERROR_MESSAGE
            payload.setdefault("errors", []).append(error)
            return True
        return False

    def handle(
        self,
        state: TokenState,
        body: bytes,
        request_id: str,
        fault: str | None = None,
        answer: str | None = None,
        options: dict | None = None,
    ) -> GraphQLResult:
        """fault: "graphql_error" or "graphql_partial" to inject that failure into a query that is
        executed and charged; refused, rate-limited and dry-run queries are answered as usual.
        answer: "graphql_timeout" or "resource_limits" (with their options) likewise."""
        options = options or {}
        acc = self.acc
        if state.name is None:
            return GraphQLResult(
                401,
                {
                    "message": "This endpoint requires you to be authenticated.",
                    "documentation_url": f"{DOCS}/guides/forming-calls-with-graphql"
                    "#authenticating-with-graphql",
                    "status": "401",
                },
                acc.snapshot(state, "graphql"),
            )
        window = acc.snapshot(state, "graphql")

        def refuse(errors: list[dict], data_null: bool = False) -> GraphQLResult:
            payload = {"data": None, "errors": errors} if data_null else {"errors": errors}
            return GraphQLResult(200, payload, window)

        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return GraphQLResult(
                400,
                {"message": "Problems parsing JSON", "documentation_url": f"{DOCS}", "status": "400"},
                window,
            )
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            return refuse([{"message": "A query attribute must be specified and must be a string."}])
        variables = request.get("variables") or {}
        if not isinstance(variables, dict):
            return refuse([{"message": "Variables are invalid JSON."}])
        operation_name = request.get("operationName") or None
        try:
            document = parse(request["query"])
        except GraphQLError as err:
            return refuse([_format_error(err)])
        errors = validate(self.schema, document)
        if errors:
            return refuse([_format_error(e) for e in errors])
        analysis = analyze(document, self.schema, variables, operation_name)
        if analysis.errors:
            return refuse(analysis.errors, data_null=True)
        too_many = _too_many_ids(document, operation_name, variables)
        if too_many:
            return refuse(
                [
                    {
                        "type": "ARGUMENT_LIMIT",
                        "message": f"You may not provide more than {MAX_IDS} node ids; you provided {too_many}.",
                    }
                ],
                data_null=True,
            )
        scopes = state.config.scopes if state.config else ()
        if analysis.user_email and not any(s in scopes for s in EMAIL_SCOPES):
            return refuse(
                [
                    {
                        "type": "INSUFFICIENT_SCOPES",
                        "locations": [],
                        "message": "Your token has not been granted the required scopes to execute this query. "
                        "The 'email' field requires one of the following scopes: ['user:email', "
                        f"'read:user'], but your token has only been granted the: {list(scopes)} "
                        "scopes. Please modify your token's scopes at: https://github.com/settings/tokens.",
                    }
                ],
                data_null=True,
            )

        ctx = _Ctx(self.ds, state, cost=analysis.cost, node_count=analysis.node_count, window=window)
        if analysis.dry_run:
            document = _only_rate_limit(document, operation_name)
        else:
            retry = acc.cpu_retry(state)
            if retry is not None:
                return GraphQLResult(0, None, window, answer="secondary_cpu", secondary_retry=retry)
            charged, ctx.window = acc.try_charge(state, "graphql", analysis.cost)
            if not charged:
                uid = self.ds.viewer_id(state.account_name)
                return GraphQLResult(
                    200,
                    {
                        "errors": [
                            {
                                "type": "RATE_LIMITED",
                                "message": f"API rate limit already exceeded for user ID {uid}.",
                            }
                        ]
                    },
                    ctx.window,
                    answer="primary_exhausted",
                )
            acc.book_cpu(state, acc.cpu_ms(analysis.node_count))
            if answer == "graphql_timeout":
                # GitHub charges a query that timed out, and deducts extra points for the timeout
                window = acc.charge_penalty(state, "graphql", self.config.timeout_penalty_points)
                if options.get("body") == "server_error":
                    body: dict = {"message": "Server Error"}
                else:
                    body = {"data": None, "errors": [{"message": TIMEOUT_MESSAGE.format(request_id)}]}
                cost = analysis.cost + window.used - ctx.window.used
                return GraphQLResult(502, body, window, cost, answer=answer)
            timeout = self.config.graphql_timeout_nodes
            if timeout is not None and analysis.node_count > timeout:
                # GitHub: queries running over 10 s fail with 502/504 and are still charged
                return GraphQLResult(
                    502,
                    {
                        "data": None,
                        "errors": [{"message": TIMEOUT_MESSAGE.format(request_id)}],
                    },
                    ctx.window,
                    analysis.cost,
                )
            if fault == "graphql_error":
                # GitHub's transient internal error: HTTP 200, no data, one error with neither type
                # nor path. The query was accepted and costed, so it is charged.
                return GraphQLResult(
                    200,
                    {
                        "data": None,
                        "errors": [
                            {
                                "message": "Something went wrong while executing your query. Please include "
                                f"`{request_id}` when reporting this issue."
                            }
                        ],
                    },
                    ctx.window,
                    analysis.cost,
                    fault,
                )

        with self.ds.lock:
            result = execute(
                self.schema,
                document,
                root_value=Resolver(ctx).root(),
                context_value=ctx,
                variable_values=variables,
                operation_name=operation_name,
                type_resolver=_type_resolver,
            )
        payload: dict = {"data": result.data}
        errors_out = [_format_error(e) for e in result.errors or ()] + ctx.errors
        if errors_out:
            payload["errors"] = errors_out
        injected = given = None
        limit = self.config.resource_limit_nodes
        if not analysis.dry_run and (
            answer == "resource_limits" or (limit is not None and analysis.node_count > limit)
        ):
            given = "resource_limits" if _null_largest_list(payload) else None
        elif fault == "graphql_partial" and not analysis.dry_run:
            injected = fault if self._null_one_field(document, operation_name, payload) else None
        return GraphQLResult(
            200, payload, ctx.window, 0 if analysis.dry_run else analysis.cost, injected, ctx.pages, given
        )
