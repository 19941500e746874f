"""Request pipeline shared by every API route, independent of the HTTP server:
auth -> injected faults -> secondary limits -> primary quota -> handler -> ETag -> headers -> log.
Also serves the /_emulator/* control routes, which no fault ever touches.

Injected faults (EmulatorConfig fields, changed at runtime by set_faults() or POST /_emulator/faults;
all off by default, random ones drawn from one generator seeded by fault_seed). Each is counted
under stats()["faults"][kind] and listed in the request log entry's "faults":

kind                setting                     answer                                      quota
502                 fault_502_rate              502 {"message": "Server Error"}             free
burst               fault_burst                 the next `count` requests: that 5xx         free
slow                fault_slow_rate, _seconds   processed, then held back that long         charged
bad_json_truncated  fault_bad_json_rate         a 200's JSON cut short (length consistent)  charged
bad_json_html       fault_bad_json_rate         a 200 carrying GitHub's HTML error page     charged
graphql_error       fault_graphql_error_rate    200 {"data": null, "errors": [...]}         charged
graphql_partial     fault_graphql_partial_rate  a top-level field null, SERVICE_UNAVAILABLE charged
link_loop           fault_link_loop, _to        last list page's rel="next" points back     charged
redirect_chain      fault_redirect_chain        N 301 hops for a renamed repo's old name    charged
redirect_loop       fault_redirect_loop         301s between the old name and another URL   charged

"charged" means exactly what the same request costs without the fault (GitHub charges what it
processed): REST 1 (a 301 included), GraphQL the query's cost.

GitHub's answers to limits and failures (ANSWER_KINDS): inject(kind, count, token, **options) or
POST /_emulator/inject gives the next `count` requests the kind applies to (of that token, if
named) that answer; answer_rates gives them at random. GraphQL kinds apply to POST /graphql, REST
kinds to REST GETs, both-kinds to either; never to /rate_limit, unauthenticated requests or the
control routes. Each is counted under stats()["answers"][kind] and logged as the entry's "answer".

kind                               answer                                               quota
graphql_rate_limited               200 data null, errors[].type RATE_LIMITED,            window
                                   x-ratelimit-remaining 0                              emptied
graphql_rate_limited_stale_header  the same, the headers still showing quota left       emptied
graphql_rate_limit_code            200, type RATE_LIMIT, extensions.code                emptied
                                   graphql_rate_limit
rest_primary                       403/429 (option status) "API rate limit exceeded"    emptied
graphql_secondary_200 / _403       200 errors[] / 403 {"message"}: "You have exceeded   free
                                   a secondary rate limit..."
rest_secondary_403 / _429          403 / 429 with that message                          free
graphql_timeout                    502 GitHub's timeout body (option body: graphql |    charged +
                                   server_error)                                        penalty
validation_error                   200 undefinedField error, no "data" key              free
resource_limits                    partial data: the largest list nulled,               charged
                                   RESOURCE_LIMITS_EXCEEDED with its path
unauthorized                       401 Bad credentials (the token stays valid)          free
dropped_connection                 200 headers with the full content-length, half the   charged
                                   body, then the connection closes
foreign_redirect                   302/307 (option status) to the same path on another  free
                                   host name (localhost <-> 127.0.0.1, same port)
foreign_link                       a list page whose rel="next" points at that host     charged

Secondary kinds take retry_after: "present" (header retry-after: wait, default the config's
secondary_retry_after or 3), "absent" or "blank" (header with no value); default one of the
three at random (seeded). A kind that cannot apply once taken (a graphql_timeout or
resource_limits for a query refused before execution, a foreign_link whose answer is no list page)
is used up and the request answered as usual.

Limits the emulator reaches itself are counted under NATURAL_ANSWERS. Every limit answer sets the
account's prescribed wait: the window's reset after a primary one; after a secondary one the
retry-after if it carries a number, else the reset if remaining is 0, else secondary_default_wait.
An API request of that account (any token, any resource; /rate_limit excepted, which GitHub
invites clients to call) arriving before then is an early request: counted in stats, logged with
"early": true and, with punish_early, answered with a fresh secondary limit. Requests that arrive
on a foreign host name are counted (foreign_requests, foreign_requests_with_token when they carry
an Authorization header) and answered as usual."""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from .accounting import Accounting, TokenState, Window
from .apps import GitHubApps, is_app_route
from .config import (
    ANSWER_KINDS,
    FAULT_FIELDS,
    GRAPHQL_ANSWER_KINDS,
    REST_ANSWER_KINDS,
    RETRY_AFTER_FORMS,
    EmulatorConfig,
    normalize_answer,
    normalize_faults,
)
from .data import RELATIONS, Dataset
from .graphql_api import GraphQLApi
from .rest import RestApi, RestRequest, error, family, not_found

# Bodies GitHub sends with its own 5xx answers.
SERVER_ERROR_MESSAGES = {
    500: "Server Error",
    502: "Server Error",
    503: "No server is currently available to service your request. Sorry about that. Please try "
    "resubmitting your request and contact us if the problem persists.",
    504: "We couldn't respond to your request in time. Sorry about that. Please try resubmitting your "
    "request and contact us if the problem persists.",
}
# What a client gets when GitHub's front end fails instead of the API (the "Unicorn!" page,
# e.g. octokit/graphql.js#554); it comes with the headers of a normal answer.
ERROR_PAGE_HTML = b"""<!DOCTYPE html>
<html>
  <head>
    <meta http-equiv="Content-type" content="text/html; charset=utf-8">
    <title>Unicorn! &middot; GitHub</title>
  </head>
  <body>
    <p><strong>This page is taking too long to load.</strong></p>
    <p>Sorry about that. Please try refreshing and contact us if the problem persists.</p>
  </body>
</html>
"""
API_VERSION = "2026-03-10"
SECRET_PARAMS = frozenset({"access_token", "token", "client_secret", "client_id"})
RATE_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
SECONDARY_DOCS = (
    "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you "
    "reach out to GitHub Support for help, please include the request ID {}."
)
DEFAULT_RETRY_AFTER = 3  # seconds an injected secondary limit asks for when nothing else says
BAD_CREDENTIALS = {
    "message": "Bad credentials",
    "documentation_url": "https://docs.github.com/rest",
    "status": "401",
}
VALIDATION_ERROR = {
    "errors": [
        {
            "path": ["query Collect", "repository", "nope"],
            "extensions": {"code": "undefinedField", "typeName": "Repository", "fieldName": "nope"},
            "locations": [{"line": 1, "column": 1}],
            "message": "Field 'nope' doesn't exist on type 'Repository'",
        }
    ]
}
_LIST_PATH = re.compile(
    r"^/(?:repos/[^/]+/[^/]+|repositories/\d+)/(?:contributors|forks|stargazers|subscribers)/?$"
)
_NEXT_LINK = re.compile(r'<([^>]*)>; rel="next"')


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    drop: bool = False  # send the full content-length, half the body, then close the connection


@dataclass
class _Draw:
    """The random faults drawn for one request before it is processed."""

    slow: bool = False
    bad_json: str | None = None  # "bad_json_truncated" | "bad_json_html"
    cut: float = 0.5  # where a truncated body is cut, as a fraction of the middle half
    graphql: str | None = None  # "graphql_error" | "graphql_partial"


def _json(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    want = etag.removeprefix("W/")
    return any(tag.strip() == "*" or tag.strip().removeprefix("W/") == want for tag in header.split(","))


def foreign_host(host: str) -> str:
    """Another host name for the same server: localhost <-> 127.0.0.1, port kept. A client sees a
    different host; the emulator sees itself."""
    name, sep, port = host.rpartition(":")
    if not sep or "]" in port:
        name, port = host, ""
    other = "127.0.0.1" if name.lower() == "localhost" else "localhost"
    return f"{other}:{port}" if port else other


def truth_json(truth: dict) -> dict:
    """truth() in a JSON-friendly form (tuple keys and sets flattened)."""
    return {
        "repos": truth["repos"],
        "users": {str(k): v for k, v in truth["users"].items()},
        "repo_users": [
            {
                "repo_id": r,
                "user_id": u,
                "relations": sorted(e["relations"]),
                "contributions": e["contributions"],
                "starred_at": e["starred_at"],
            }
            for (r, u), e in sorted(truth["repo_users"].items())
        ],
    }


class EmulatorApp:
    def __init__(self, ds: Dataset, config: EmulatorConfig) -> None:
        self.ds = ds
        self.config = config
        self.acc = Accounting(config)
        self.apps = GitHubApps(ds, self.acc, config)
        self.rest = RestApi(ds, self.acc)
        self.graphql = GraphQLApi(ds, self.acc, config)
        self._rng = random.Random(config.fault_seed)
        self._rng_lock = threading.Lock()
        self._request_seq = 0
        self._burst_left, self._burst_status = 0, 502
        self._arm_burst(config.fault_burst)
        self._pending: list[dict] = []  # injected answers still to give, oldest first
        self._foreign_hosts: set[str] = set()  # host names sent out by foreign_redirect/_link
        # set when the server stops, so requests held back by the slow fault end at once
        self.stalls_released = threading.Event()
        ds.register_tokens(config.tokens)

    # ------------------------------------------------------------------ control
    def set_faults(self, **settings: object) -> None:
        """Change fault and limit settings at runtime; ``token_valid={"name": False}`` revokes."""
        token_valid = settings.pop("token_valid", None) or {}
        unknown = set(settings) - FAULT_FIELDS
        unknown |= set(token_valid) - set(self.acc.by_name)
        if unknown:
            raise ValueError(f"unknown settings or tokens: {sorted(unknown)}")
        if settings.get("primary_limit_status", 403) not in (403, 429):
            raise ValueError("primary_limit_status must be 403 or 429")
        settings = normalize_faults(settings)
        for key, value in settings.items():
            setattr(self.config, key, value)
        if "fault_seed" in settings:
            with self._rng_lock:
                self._rng.seed(settings["fault_seed"])
        if "fault_burst" in settings:  # setting a burst (again) starts it afresh
            self._arm_burst(settings["fault_burst"])
        for name, valid in token_valid.items():
            self.acc.set_valid(name, bool(valid))

    def inject(self, kind: str, count: int = 1, token: str | None = None, **options: object) -> None:
        """Give the next `count` requests `kind` applies to (only token's, if a token name is given)
        that answer instead of the normal one. ValueError names a bad kind, option or token."""
        spec = normalize_answer(kind, count, token, options)
        if token is not None and token not in self.acc.by_name:
            raise ValueError(f"unknown token {token!r}")
        with self._rng_lock:
            self._pending.append(spec)

    def pending_answers(self) -> list[dict]:
        with self._rng_lock:
            return [dict(spec) for spec in self._pending]

    def _admin(self, method: str, path: str, query: dict, body: bytes) -> Response:
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("expected a JSON object")
            if method == "GET" and path == "/_emulator/stats":
                return Response(200, body=_json(self.acc.stats()))
            if method == "GET" and path == "/_emulator/log":
                return Response(200, body=_json(self.acc.request_log()))
            if method == "GET" and path == "/_emulator/health":
                return Response(200, body=_json({"ok": True}))
            if method == "GET" and path == "/_emulator/repos":
                return Response(200, body=_json(self.ds.repo_names()))
            if method == "GET" and path == "/_emulator/truth":
                relations = query.get("relations", ",".join(RELATIONS)).split(",")
                truth = self.ds.truth(relations=relations, token_name=query.get("token") or None)
                return Response(200, body=_json(truth_json(truth)))
            if method == "POST" and path == "/_emulator/quota/reset":
                self.acc.reset(payload.get("token"))
                return Response(200, body=_json({"ok": True}))
            if method == "POST" and path == "/_emulator/faults":
                self.set_faults(**payload)
                return Response(200, body=_json({"ok": True}))
            if method == "POST" and path == "/_emulator/inject":
                payload.setdefault("count", 1)
                if "kind" not in payload:
                    raise ValueError("kind is required")
                self.inject(**payload)
                return Response(200, body=_json({"ok": True}))
            if method == "POST" and path == "/_emulator/mutate":
                op = payload.pop("op", None)
                result = self.ds.mutate(str(op), **payload)
                return Response(200, body=_json({"ok": True, "result": result}))
        except (ValueError, KeyError, TypeError) as exc:
            return Response(400, body=_json({"ok": False, "error": str(exc)}))
        return Response(404, body=_json({"ok": False, "error": "unknown control route"}))

    # ------------------------------------------------------------------ faults
    def _arm_burst(self, burst: dict | None) -> None:
        with self._rng_lock:
            self._burst_left = burst["count"] if burst else 0
            self._burst_status = burst["status"] if burst else 502

    def _take_burst(self) -> int | None:
        """The status to answer with while a burst lasts, else None."""
        with self._rng_lock:
            if self._burst_left <= 0:
                return None
            self._burst_left -= 1
            return self._burst_status

    def _draw(self, is_graphql: bool) -> _Draw:
        """Draw the random faults of one request. A rate of 0 draws nothing, so enabling one fault
        leaves the sequence of the others (and of fault_502_rate) as it was."""
        cfg, rng, draw = self.config, self._rng, _Draw()
        with self._rng_lock:
            if cfg.fault_slow_rate > 0:
                draw.slow = rng.random() < cfg.fault_slow_rate
            if cfg.fault_bad_json_rate > 0 and rng.random() < cfg.fault_bad_json_rate:
                draw.bad_json = "bad_json_html" if rng.random() < 0.5 else "bad_json_truncated"
                draw.cut = rng.random()
            if (
                is_graphql
                and cfg.fault_graphql_error_rate > 0
                and rng.random() < cfg.fault_graphql_error_rate
            ):
                draw.graphql = "graphql_error"
            partial = cfg.fault_graphql_partial_rate
            if is_graphql and draw.graphql is None and partial > 0 and rng.random() < partial:
                draw.graphql = "graphql_partial"
        return draw

    @staticmethod
    def _applies(kind: str, is_graphql: bool, method: str, path: str) -> bool:
        if is_graphql:
            return method == "POST" and kind not in REST_ANSWER_KINDS
        if method != "GET" or kind in GRAPHQL_ANSWER_KINDS:
            return False
        return kind != "foreign_link" or bool(_LIST_PATH.match(path))

    def _take_answer(
        self, state: TokenState, is_graphql: bool, method: str, path: str
    ) -> tuple[str, dict] | None:
        """The injected answer this request gets (oldest that applies), else one drawn from
        answer_rates (a rate of 0 draws nothing, so other random sequences stay as they were)."""
        if state.name is None:
            return None
        with self._rng_lock:
            for i, spec in enumerate(self._pending):
                if spec["token"] not in (None, state.name):
                    continue
                if not self._applies(spec["kind"], is_graphql, method, path):
                    continue
                spec["left"] -= 1
                if spec["left"] <= 0:
                    del self._pending[i]
                return spec["kind"], dict(spec["options"])
            rates = self.config.answer_rates
            for kind in ANSWER_KINDS if rates else ():
                rate = rates.get(kind, 0.0)
                if rate > 0 and self._applies(kind, is_graphql, method, path) and self._rng.random() < rate:
                    return kind, {}
        return None

    def _retry_form(self, options: dict) -> str:
        form = options.get("retry_after")
        if form is None:
            with self._rng_lock:
                form = self._rng.choice(RETRY_AFTER_FORMS)
        return form

    @staticmethod
    def _bad_body(body: bytes, draw: _Draw) -> bytes:
        if draw.bad_json == "bad_json_html":
            return ERROR_PAGE_HTML
        # a strict prefix of a JSON object or array never parses; cut somewhere in the middle half
        n = len(body)
        return body[: max(1, min(n - 1, int(n * (0.25 + 0.5 * draw.cut))))]

    # ------------------------------------------------------------------ API
    def _request_id(self) -> str:
        with self._rng_lock:
            self._request_seq += 1
            n = self._request_seq
        return (
            f"E{n % 0xFFFF:04X}:{n:05X}:{(n * 2654435761) % 0xFFFFFF:06X}:{n * 7:06X}:{int(time.time()):08X}"
        )

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b"", host: str = "127.0.0.1"
    ) -> Response:
        """headers: lower-case names. host: the Host the client used (for link and location)."""
        parts = urlsplit(target)
        path = parts.path or "/"
        query = parse_qsl(parts.query, keep_blank_values=True)
        if path.startswith("/_emulator/"):
            resp = self._admin(method, path, dict(query), body)
            resp.headers["content-type"] = "application/json; charset=utf-8"
            return resp

        if host.lower() in self._foreign_hosts:
            self.acc.note_foreign("authorization" in headers)
        if is_app_route(method, path):
            # Authenticated by the App's JWT, not a token; no quota charged.
            status, payload = self.apps.handle(method, path, headers.get("authorization"), f"http://{host}")
            resp = Response(status, body=_json(payload))
            resp.headers["content-type"] = "application/json; charset=utf-8"
            resp.headers["x-github-api-version-selected"] = API_VERSION
            self.acc.record(None, method, path, status, "core", 0, note={"app": True})
            return resp
        request_id = self._request_id()
        is_graphql = path.rstrip("/") == "/graphql"
        resource = "graphql" if is_graphql else "core"
        state, ok = self.acc.identify(headers.get("authorization"))
        early = False
        dropped = False  # the dropped_connection answer: cut whatever body this request gets
        # legacy clients may put credentials in the query string; never log their values
        logged_query = [(k, "REDACTED" if k.lower() in SECRET_PARAMS else v) for k, v in query]
        log_path = path + (f"?{urlencode(logged_query)}" if query else "")

        draw = _Draw()  # replaced once the request gets past the fixed faults and the concurrency limit

        def finish(
            result_status: int,
            payload: object,
            window: Window,
            cost: int = 0,
            extra: dict[str, str] | None = None,
            fault: str | None = None,
            who: TokenState | None = state,
            note: dict | None = None,
            answer: str | None = None,
        ) -> Response:
            resp = Response(result_status, body=b"" if payload is None else _json(payload))
            if dropped and resp.body and method != "HEAD":
                resp.drop, answer = True, answer or "dropped_connection"
            faults = [fault] if fault else []
            if draw.bad_json and result_status == 200 and resp.body:
                resp.body = self._bad_body(resp.body, draw)  # headers stay those of a good answer
                faults.append(draw.bad_json)
            if draw.slow:
                faults.append("slow")
            resp.headers.update(
                {
                    "content-type": "application/json; charset=utf-8",
                    "x-github-api-version-selected": API_VERSION,
                    "x-ratelimit-limit": str(window.limit),
                    "x-ratelimit-remaining": str(window.remaining),
                    "x-ratelimit-reset": str(window.reset),
                    "x-ratelimit-used": str(window.used),
                    "x-ratelimit-resource": resource,
                    "x-github-request-id": request_id,
                    **(extra or {}),
                }
            )
            if cost:
                # The window's units left after this charge: lets a test check that no token
                # ever went below its reserve, in any window, whoever sent the requests.
                note = {**(note or {}), "remaining": window.remaining, "reset": window.reset}
            self.acc.record(
                who, method, log_path, result_status, resource, cost, faults, note, answer=answer, early=early
            )
            return resp

        if not ok:
            # unknown or revoked token: GitHub reports the unauthenticated budget
            anon = self.acc.snapshot(self.acc.anonymous, "core")
            return finish(401, BAD_CREDENTIALS, anon, who=state)
        assert state is not None
        cfg = self.config
        if path.rstrip("/") != "/rate_limit":
            early = self.acc.arrive(state)
            if early and cfg.punish_early:
                retry = cfg.secondary_retry_after or DEFAULT_RETRY_AFTER
                return self._secondary(
                    finish, state, resource, request_id, answer="secondary_early", wait=retry
                )
            taken = self._take_answer(state, is_graphql, method, path)
        else:
            taken = None
        answer, options = taken or (None, {})
        if answer is not None:
            resp = self._answer_now(answer, options, finish, state, resource, request_id, target, host)
            if resp is not None:
                return resp
            dropped = answer == "dropped_connection"
        # 5xx answers come from GitHub's front end before any quota is looked at: they cost nothing
        burst = self._take_burst()
        if burst is not None:
            message = {"message": SERVER_ERROR_MESSAGES[burst]}
            return finish(burst, message, self.acc.snapshot(state, resource), fault="burst")
        with self._rng_lock:
            inject = cfg.fault_502_rate > 0 and self._rng.random() < cfg.fault_502_rate
        if inject:
            return finish(502, {"message": "Server Error"}, self.acc.snapshot(state, resource), fault="502")

        retry_after = self.acc.enter(state)
        if retry_after is not None:
            return self._secondary(
                finish, state, resource, request_id, answer="secondary_concurrency", wait=retry_after
            )
        try:
            draw = self._draw(is_graphql)
            if cfg.latency_ms:
                time.sleep(cfg.latency_ms / 1000)  # a slow answer keeps the request in flight
            if is_graphql:
                resp = self._graphql(method, state, body, request_id, finish, draw.graphql, answer, options)
            else:
                resp = self._rest(method, path, query, headers, host, state, request_id, finish, answer)
            if draw.slow:
                # processed and charged already, as GitHub charges what it processed; the answer is
                # only held back (still in flight), so a client with a shorter timeout gives up
                self.stalls_released.wait(cfg.fault_slow_seconds)
            return resp
        finally:
            self.acc.leave(state)

    def _secondary(
        self,
        finish,
        state: TokenState,
        resource: str,
        request_id: str,
        *,
        answer: str,
        wait: int | None,
        form: str = "present",
        status: int | None = None,
        graphql_200: bool = False,
    ) -> Response:
        """A secondary limit; retry-after `form` "present" (carrying `wait`), "absent" or "blank".
        Sets the account's prescribed wait as GitHub's procedure reads the answer."""
        window = self.acc.snapshot(state, resource)
        message = SECONDARY_MESSAGE.format(request_id)
        extra: dict[str, str] = {}
        now = self.acc.clock()
        if form == "present" and wait is not None:
            extra["retry-after"] = str(wait)
            until = now + wait
        else:
            if form == "blank":
                extra["retry-after"] = ""
            until = window.reset if window.remaining == 0 else now + self.config.secondary_default_wait
        self.acc.prescribe(state, until, primary=False)
        if graphql_200:
            status, payload = 200, {"errors": [{"message": message}]}
        else:
            status = status or self.config.secondary_status
            payload = {"message": message, "documentation_url": SECONDARY_DOCS, "status": str(status)}
        return finish(status, payload, window, extra=extra, note={"limit": "secondary"}, answer=answer)

    def _answer_now(
        self,
        kind: str,
        options: dict,
        finish,
        state: TokenState,
        resource: str,
        request_id: str,
        target: str,
        host: str,
    ) -> Response | None:
        """The answers given before any processing; None for kinds that need the request run."""
        cfg, acc = self.config, self.acc
        if kind == "unauthorized":
            return finish(401, BAD_CREDENTIALS, acc.snapshot(acc.anonymous, "core"), answer=kind)
        if kind.startswith("graphql_rate_limit"):
            before, after = acc.empty_window(state, "graphql")
            acc.prescribe(state, after.reset, primary=True)
            uid = self.ds.viewer_id(state.account_name)
            if kind == "graphql_rate_limit_code":
                error = {
                    "type": "RATE_LIMIT",
                    "extensions": {"code": "graphql_rate_limit"},
                    "message": f"API rate limit already exceeded for user ID {uid}.",
                }
            else:
                error = {"type": "RATE_LIMITED", "message": f"API rate limit exceeded for user ID {uid}."}
            shown = after
            if kind == "graphql_rate_limited_stale_header":  # the headers still show quota left
                shown = Window(before.limit, min(before.used, max(0, before.limit - 1)), before.reset)
            return finish(
                200, {"data": None, "errors": [error]}, shown, note={"limit": "primary"}, answer=kind
            )
        if kind == "rest_primary":
            _, window = acc.empty_window(state, "core")
            return self._primary_exceeded(
                finish, state, window, request_id, options.get("status"), answer=kind
            )
        if kind in (
            "graphql_secondary_200",
            "graphql_secondary_403",
            "rest_secondary_403",
            "rest_secondary_429",
        ):
            wait = options.get("wait")
            if wait is None:
                wait = cfg.secondary_retry_after or DEFAULT_RETRY_AFTER
            return self._secondary(
                finish,
                state,
                resource,
                request_id,
                answer=kind,
                wait=wait,
                form=self._retry_form(options),
                status=429 if kind.endswith("429") else 403,
                graphql_200=kind == "graphql_secondary_200",
            )
        if kind == "validation_error":
            return finish(200, VALIDATION_ERROR, acc.snapshot(state, "graphql"), answer=kind)
        if kind == "foreign_redirect":
            other = foreign_host(host)
            with self._rng_lock:
                self._foreign_hosts.add(other.lower())
            location = f"http://{other}{target}"
            status = options.get("status") or 302
            body = {"message": "Found" if status == 302 else "Temporary Redirect", "url": location}
            extra = {"location": location}
            return finish(status, body, acc.snapshot(state, "core"), extra=extra, answer=kind)
        return None

    def _primary_exceeded(
        self,
        finish,
        state: TokenState,
        window: Window,
        request_id: str,
        status: int | None = None,
        answer: str = "primary_exhausted",
    ) -> Response:
        if state.name is not None:
            self.acc.prescribe(state, window.reset, primary=True)
        if state.name is None:
            who = (
                "127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. "
                "Check out the documentation for more details.)"
            )
        else:
            who = f"user ID {self.ds.viewer_id(state.account_name)}."
        status = status or self.config.primary_limit_status
        return finish(
            status,
            {
                "message": f"API rate limit exceeded for {who} If you reach out to GitHub Support for help, "
                f"please include the request ID {request_id} and timestamp "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.",
                "documentation_url": RATE_DOCS,
                "status": str(status),
            },
            window,
            note={"limit": "primary"},
            answer=answer,
        )

    def _graphql(
        self,
        method: str,
        state: TokenState,
        body: bytes,
        request_id: str,
        finish,
        fault: str | None,
        answer: str | None = None,
        options: dict | None = None,
    ) -> Response:
        if method != "POST":
            return finish(404, not_found().body, self.acc.snapshot(state, "graphql"))
        retry = self.acc.take_points(state, "graphql", 1, graphql=True)
        if retry is not None:
            return self._secondary(
                finish, state, "graphql", request_id, answer="secondary_points", wait=retry
            )
        result = self.graphql.handle(state, body, request_id, fault, answer, options)
        if result.secondary_retry is not None:
            return self._secondary(
                finish, state, "graphql", request_id, answer="secondary_cpu", wait=result.secondary_retry
            )
        note = {"pages": result.pages} if result.pages else None
        if result.answer == "primary_exhausted":
            self.acc.prescribe(state, result.window.reset, primary=True)
            note = {**(note or {}), "limit": "primary"}
        return finish(
            result.status,
            result.payload,
            result.window,
            result.cost,
            fault=result.fault,
            note=note,
            answer=result.answer,
        )

    def _rest(
        self,
        method: str,
        path: str,
        query: list,
        headers: dict[str, str],
        host: str,
        state: TokenState,
        request_id: str,
        finish,
        answer: str | None = None,
    ) -> Response:
        if method not in ("GET", "HEAD"):
            return finish(404, not_found().body, self.acc.snapshot(state, "core"))
        fam, free = family(path)
        if not free:
            retry = self.acc.take_points(state, fam, 1, graphql=False)
            if retry is not None:
                return self._secondary(
                    finish, state, "core", request_id, answer="secondary_points", wait=retry
                )
            window = self.acc.snapshot(state, "core")
            if window.remaining < 1:
                self.acc.note_primary_hit()
                return self._primary_exceeded(finish, state, window, request_id)
        req = RestRequest(method, path, query, headers, f"http://{host}")
        try:
            result = self.rest.handle(req, state)
        except Exception:  # a handler bug must still answer, like GitHub's 500s
            result = error(500, "Server Error")
        extra = dict(result.headers)
        payload = result.body
        cost = 0
        if result.status == 200 and payload is not None:
            token = state.config.token if state.config else ""
            etag = 'W/"' + hashlib.sha256(token.encode() + b"\0" + _json(payload)).hexdigest() + '"'
            extra["etag"] = etag
            extra["cache-control"] = "private, max-age=60, s-maxage=60"
            extra["vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"
            if _etag_matches(headers.get("if-none-match"), etag):
                # a 304 costs nothing against the primary limit
                return finish(304, None, self.acc.snapshot(state, "core"), extra=extra, fault=result.fault)
        if free:
            window = self.acc.snapshot(state, "core")
        else:
            charged, window = self.acc.try_charge(state, "core", 1)
            if not charged:
                return self._primary_exceeded(finish, state, window, request_id)
            cost = 1
        if method == "HEAD":
            payload = None
        given = None
        if answer == "foreign_link" and result.status == 200 and isinstance(payload, list):
            extra["link"] = self._foreign_next(extra.get("link"), req)
            given = answer
        return finish(result.status, payload, window, cost, extra, fault=result.fault, answer=given)

    def _foreign_next(self, link: str | None, req: RestRequest) -> str:
        """The link header with rel="next" on the foreign host name (added if the page had none)."""
        other = foreign_host(req.base_url.removeprefix("http://"))
        with self._rng_lock:
            self._foreign_hosts.add(other.lower())
        origin = f"http://{other}"
        if link and _NEXT_LINK.search(link):
            return _NEXT_LINK.sub(
                lambda m: f'<{origin}{m.group(1).removeprefix(req.base_url)}>; rel="next"', link
            )
        page = next((v for k, v in req.query if k == "page"), "1")
        nxt = int(page) + 1 if page.isdigit() else 2
        query = [(k, v) for k, v in req.query if k != "page"] + [("page", str(nxt))]
        entry = f'<{origin}{req.path}?{urlencode(query)}>; rel="next"'
        return f"{link}, {entry}" if link else entry
