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
processed): REST 1 (a 301 included), GraphQL the query's cost."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from .accounting import Accounting, TokenState, Window
from .config import FAULT_FIELDS, EmulatorConfig, normalize_faults
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


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


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
        self.rest = RestApi(ds, self.acc)
        self.graphql = GraphQLApi(ds, self.acc, config)
        self._rng = random.Random(config.fault_seed)
        self._rng_lock = threading.Lock()
        self._request_seq = 0
        self._burst_left, self._burst_status = 0, 502
        self._arm_burst(config.fault_burst)
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

        request_id = self._request_id()
        is_graphql = path.rstrip("/") == "/graphql"
        resource = "graphql" if is_graphql else "core"
        state, ok = self.acc.identify(headers.get("authorization"))
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
        ) -> Response:
            resp = Response(result_status, body=b"" if payload is None else _json(payload))
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
                note = {**(note or {}), "remaining": window.remaining}
            self.acc.record(who, method, log_path, result_status, resource, cost, faults, note)
            return resp

        if not ok:
            # unknown or revoked token: GitHub reports the unauthenticated budget
            anon = self.acc.snapshot(self.acc.anonymous, "core")
            return finish(
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
                anon,
                who=state,
            )
        assert state is not None
        cfg = self.config
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
            return self._secondary(finish, state, resource, retry_after, request_id)
        try:
            draw = self._draw(is_graphql)
            if cfg.latency_ms:
                time.sleep(cfg.latency_ms / 1000)  # a slow answer keeps the request in flight
            if is_graphql:
                resp = self._graphql(method, state, body, request_id, finish, draw.graphql)
            else:
                resp = self._rest(method, path, query, headers, host, state, request_id, finish)
            if draw.slow:
                # processed and charged already, as GitHub charges what it processed; the answer is
                # only held back (still in flight), so a client with a shorter timeout gives up
                self.stalls_released.wait(cfg.fault_slow_seconds)
            return resp
        finally:
            self.acc.leave(state)

    def _secondary(
        self, finish, state: TokenState, resource: str, retry_after: int, request_id: str
    ) -> Response:
        return finish(
            self.config.secondary_status,
            {
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                "again. If you reach out to GitHub Support for help, please include the request ID "
                f"{request_id}.",
                "documentation_url": "https://docs.github.com/free-pro-team@latest/rest/overview/"
                "rate-limits-for-the-rest-api#about-secondary-rate-limits",
                "status": str(self.config.secondary_status),
            },
            self.acc.snapshot(state, resource),
            extra={"retry-after": str(retry_after)},
            note={"limit": "secondary"},
        )

    def _primary_exceeded(self, finish, state: TokenState, window: Window, request_id: str) -> Response:
        if state.name is None:
            who = (
                "127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. "
                "Check out the documentation for more details.)"
            )
        else:
            who = f"user ID {self.ds.viewer_id(state.name)}."
        status = self.config.primary_limit_status
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
        )

    def _graphql(
        self, method: str, state: TokenState, body: bytes, request_id: str, finish, fault: str | None
    ) -> Response:
        if method != "POST":
            return finish(404, not_found().body, self.acc.snapshot(state, "graphql"))
        retry = self.acc.take_points(state, "graphql", 1, graphql=True)
        if retry is not None:
            return self._secondary(finish, state, "graphql", retry, request_id)
        result = self.graphql.handle(state, body, request_id, fault)
        note = {"pages": result.pages} if result.pages else None
        return finish(
            result.status, result.payload, result.window, result.cost, fault=result.fault, note=note
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
    ) -> Response:
        if method not in ("GET", "HEAD"):
            return finish(404, not_found().body, self.acc.snapshot(state, "core"))
        fam, free = family(path)
        if not free:
            retry = self.acc.take_points(state, fam, 1, graphql=False)
            if retry is not None:
                return self._secondary(finish, state, "core", retry, request_id)
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
        return finish(result.status, payload, window, cost, extra, fault=result.fault)
