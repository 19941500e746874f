"""Request pipeline shared by every API route, independent of the HTTP server:
auth -> injected faults -> secondary limits -> primary quota -> handler -> ETag -> headers -> log.
Also serves the /_emulator/* control routes."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from .accounting import Accounting, TokenState, Window
from .config import FAULT_FIELDS, EmulatorConfig
from .data import RELATIONS, Dataset
from .graphql_api import GraphQLApi
from .rest import RestApi, RestRequest, error, family, not_found

API_VERSION = "2026-03-10"
SECRET_PARAMS = frozenset({"access_token", "token", "client_secret", "client_id"})
RATE_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


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
        for key, value in settings.items():
            setattr(self.config, key, value)
        if "fault_seed" in settings:
            with self._rng_lock:
                self._rng.seed(settings["fault_seed"])
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

        def finish(
            result_status: int,
            payload: object,
            window: Window,
            cost: int = 0,
            extra: dict[str, str] | None = None,
            fault: bool = False,
            who: TokenState | None = state,
        ) -> Response:
            resp = Response(result_status, body=b"" if payload is None else _json(payload))
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
            self.acc.record(who, method, log_path, result_status, resource, cost, fault)
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
        with self._rng_lock:
            inject = cfg.fault_502_rate > 0 and self._rng.random() < cfg.fault_502_rate
        if inject:
            return finish(502, {"message": "Server Error"}, self.acc.snapshot(state, resource), fault=True)

        retry_after = self.acc.enter(state)
        if retry_after is not None:
            return self._secondary(finish, state, resource, retry_after, request_id)
        try:
            if cfg.latency_ms:
                time.sleep(cfg.latency_ms / 1000)  # a slow answer keeps the request in flight
            if is_graphql:
                return self._graphql(method, state, body, request_id, finish)
            return self._rest(method, path, query, headers, host, state, request_id, finish)
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
        )

    def _graphql(self, method: str, state: TokenState, body: bytes, request_id: str, finish) -> Response:
        if method != "POST":
            return finish(404, not_found().body, self.acc.snapshot(state, "graphql"))
        retry = self.acc.take_points(state, "graphql", 1, graphql=True)
        if retry is not None:
            return self._secondary(finish, state, "graphql", retry, request_id)
        result = self.graphql.handle(state, body, request_id)
        return finish(result.status, result.payload, result.window, result.cost)

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
                return finish(304, None, self.acc.snapshot(state, "core"), extra=extra)
        if free:
            window = self.acc.snapshot(state, "core")
        else:
            charged, window = self.acc.try_charge(state, "core", 1)
            if not charged:
                return self._primary_exceeded(finish, state, window, request_id)
            cost = 1
        if method == "HEAD":
            payload = None
        return finish(result.status, payload, window, cost, extra)
