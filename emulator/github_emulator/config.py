"""Emulator settings: tokens, quota windows, secondary limits and injected faults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

PRIMARY_STATUSES = (403, 429)
BURST_STATUSES = (500, 502, 503, 504)
LINK_LOOP_TARGETS = ("first", "prev")
_RATE_FIELDS = (
    "fault_slow_rate",
    "fault_bad_json_rate",
    "fault_graphql_error_rate",
    "fault_graphql_partial_rate",
)
# Answers GitHub gives when a limit is hit or something goes wrong, injectable one by one
# (EmulatorApp.inject) or at random (answer_rates); app.py's docstring describes each.
GRAPHQL_ANSWER_KINDS = (
    "graphql_rate_limited",
    "graphql_rate_limited_stale_header",
    "graphql_rate_limit_code",
    "graphql_secondary_200",
    "graphql_secondary_403",
    "graphql_timeout",
    "validation_error",
    "resource_limits",
)
REST_ANSWER_KINDS = (
    "rest_primary",
    "rest_secondary_403",
    "rest_secondary_429",
    "foreign_redirect",
    "foreign_link",
)
BOTH_ANSWER_KINDS = ("unauthorized", "dropped_connection")
ANSWER_KINDS = (*GRAPHQL_ANSWER_KINDS, *REST_ANSWER_KINDS, *BOTH_ANSWER_KINDS)
SECONDARY_ANSWER_KINDS = (
    "graphql_secondary_200",
    "graphql_secondary_403",
    "rest_secondary_403",
    "rest_secondary_429",
)
RETRY_AFTER_FORMS = ("present", "absent", "blank")
# Options each kind accepts (inject(**options) and POST /_emulator/inject).
ANSWER_OPTIONS: dict[str, frozenset[str]] = {
    **{k: frozenset() for k in ANSWER_KINDS},
    **{k: frozenset({"retry_after", "wait"}) for k in SECONDARY_ANSWER_KINDS},
    "rest_primary": frozenset({"status"}),
    "graphql_timeout": frozenset({"body"}),
    "foreign_redirect": frozenset({"status"}),
}
REDIRECT_STATUSES = (302, 307)
TIMEOUT_BODIES = ("graphql", "server_error")

_CHECKED_FAULTS = (
    *_RATE_FIELDS,
    "answer_rates",
    "graphql_cpu_ms_base",
    "graphql_cpu_ms_per_node",
    "graphql_cpu_seconds_per_minute",
    "timeout_penalty_points",
    "resource_limit_nodes",
    "secondary_default_wait",
    "punish_early",
    "fault_burst",
    "fault_slow_seconds",
    "fault_link_loop",
    "fault_link_loop_to",
    "fault_redirect_chain",
    "fault_redirect_loop",
)


@dataclass
class TokenConfig:
    name: str  # what logs and stats show; the token value itself is never reported
    token: str
    core_limit: int = 5000
    graphql_limit: int = 5000
    search_limit: int = 30
    scopes: tuple[str, ...] = ("repo", "read:user")
    # "*" = collaborator everywhere (stargazers/watchers visible); otherwise "owner/name" entries
    collaborator_repos: tuple[str, ...] = ()
    valid: bool = True  # False answers 401, as for a revoked token
    # GitHub account the token belongs to (None = its own name): tokens of one account share its
    # quota windows, concurrency and secondary limits, whose sizes come from its first token
    account: str | None = None
    # a GitHub App installation token (bought through POST /app/installations/{id}/access_tokens):
    # GET /user and the stargazer/watcher lists answer "Resource not accessible by integration"
    integration: bool = False
    expires_at: float | None = None  # epoch seconds after which the token answers 401

    def __post_init__(self) -> None:
        if self.account is None:
            self.account = self.name
        self.scopes = tuple(self.scopes)
        self.collaborator_repos = tuple(self.collaborator_repos)


@dataclass
class InstallationConfig:
    """One installation of a GitHub App: on a user or organisation account (``account``, a login),
    covering every repository of it. Its tokens share one quota, as on GitHub."""

    id: int
    account: str
    core_limit: int = 5000
    graphql_limit: int = 5000


@dataclass
class AppConfig:
    """A GitHub App: its id (the JWT's ``iss``), public key (PEM, to check the JWT's RS256
    signature) and installations."""

    app_id: int
    public_key: str
    installations: list[InstallationConfig] = field(default_factory=list)
    slug: str = "repo-users-collector"


@dataclass
class EmulatorConfig:
    tokens: list[TokenConfig] = field(default_factory=list)
    apps: list[AppConfig] = field(default_factory=list)
    installation_token_seconds: float = 3600.0  # lifetime of an installation token (GitHub: 1 h)
    window_seconds: float = 3600.0  # primary quota window; tests shrink it to seconds
    unauthenticated_core_limit: int = 60
    primary_limit_status: int = 403  # GitHub answers primary exhaustion with 403 or 429
    secondary_status: int = 403
    secondary_max_concurrent: int = 100  # requests in flight per token
    secondary_rest_points_per_minute: int = 900  # per token and REST endpoint family
    secondary_graphql_points_per_minute: int = 2000
    secondary_window_seconds: float = 60.0  # the "minute" of the points limits
    secondary_retry_after: int | None = None  # fixed retry-after; None = time until points free up
    fault_502_rate: float = 0.0  # probability of an injected 502 (seeded, no quota cost)
    fault_seed: int = 0
    latency_ms: float = 0.0  # added to every API request
    graphql_timeout_nodes: int | None = None  # queries above this node count 502 and still cost
    # {"status": 500|502|503|504, "count": n}: the next n API requests get that status (no quota cost)
    fault_burst: dict | None = None
    # probability that a request is answered only after fault_slow_seconds (processed, so charged)
    fault_slow_rate: float = 0.0
    fault_slow_seconds: float = 5.0
    # probability that a 200 with a body carries truncated JSON or an HTML page instead (charged)
    fault_bad_json_rate: float = 0.0
    # probability that a GraphQL query answers 200 {"data": null, "errors": [...]} (charged)
    fault_graphql_error_rate: float = 0.0
    # probability that one top-level field comes back null with a SERVICE_UNAVAILABLE error (charged)
    fault_graphql_partial_rate: float = 0.0
    # repos ("owner/name" or "*") whose REST lists give the last page a rel="next" back to page 1
    # ("first") or to the page before it ("prev")
    fault_link_loop: tuple[str, ...] = ()
    fault_link_loop_to: str = "first"
    # renamed repos answer this many 301s (old name -> intermediate ... -> /repositories/{id}); 0/1 = one
    fault_redirect_chain: int = 0
    fault_redirect_loop: bool = False  # old name -> intermediate -> old name -> ... forever
    # GitHub's answers to limits and failures, injected at random: kind -> probability per request
    # the kind applies to (seeded by fault_seed); see ANSWER_KINDS and app.py
    answer_rates: dict[str, float] = field(default_factory=dict)
    # GraphQL CPU time: each executed query takes base + per_node * its node count (cost model)
    # milliseconds; an account may book graphql_cpu_seconds_per_minute within any sliding
    # secondary_window_seconds (None or 0 = no CPU limit)
    graphql_cpu_ms_base: float = 10.0
    graphql_cpu_ms_per_node: float = 1.0
    graphql_cpu_seconds_per_minute: float | None = 60.0
    timeout_penalty_points: int = 1  # extra points an injected graphql_timeout costs
    # queries touching more nodes than this answer RESOURCE_LIMITS_EXCEEDED with partial data
    resource_limit_nodes: int | None = None
    # what a client must wait after a secondary limit without a usable retry-after (GitHub: 60 s)
    secondary_default_wait: float = 60.0
    punish_early: bool = False  # a request sent before its prescribed wait gets a secondary limit
    log_limit: int = 200_000  # request log entries kept (oldest dropped)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("token names must be unique")
        values = [t.token for t in self.tokens]
        if len(set(values)) != len(values):
            raise ValueError("token values must be unique")
        if self.primary_limit_status not in PRIMARY_STATUSES:
            raise ValueError("primary_limit_status must be 403 or 429")
        checked = normalize_faults({k: getattr(self, k) for k in _CHECKED_FAULTS})
        for key, value in checked.items():
            setattr(self, key, value)


def normalize_faults(settings: dict) -> dict:
    """Validate fault settings (as given to the constructor, set_faults() or the control route,
    where lists arrive as JSON arrays) and return them in the form the emulator stores."""
    out = dict(settings)
    for key in _RATE_FIELDS:
        if key in out:
            value = out[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{key} must be a probability between 0 and 1")
            out[key] = float(value)
    if "fault_burst" in out and out["fault_burst"] is not None:
        burst = out["fault_burst"]
        if not isinstance(burst, dict) or set(burst) - {"status", "count"} or "status" not in burst:
            raise ValueError('fault_burst must be {"status": 500|502|503|504, "count": n} or null')
        status, count = burst["status"], burst.get("count", 1)
        if status not in BURST_STATUSES:
            raise ValueError("fault_burst status must be one of 500, 502, 503, 504")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("fault_burst count must be an integer >= 0")
        out["fault_burst"] = {"status": int(status), "count": count}
    if "fault_slow_seconds" in out:
        value = out["fault_slow_seconds"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError("fault_slow_seconds must be >= 0")
        out["fault_slow_seconds"] = float(value)
    if "fault_link_loop" in out:
        value = out["fault_link_loop"]
        if value is None:
            value = ()
        elif isinstance(value, str):
            value = (value,)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise ValueError('fault_link_loop must be "*" or a list of "owner/name"')
        out["fault_link_loop"] = tuple(value)
    if "fault_link_loop_to" in out and out["fault_link_loop_to"] not in LINK_LOOP_TARGETS:
        raise ValueError('fault_link_loop_to must be "first" or "prev"')
    if "fault_redirect_chain" in out:
        value = out["fault_redirect_chain"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("fault_redirect_chain must be an integer >= 0")
    if "fault_redirect_loop" in out and not isinstance(out["fault_redirect_loop"], bool):
        raise ValueError("fault_redirect_loop must be true or false")
    if "answer_rates" in out:
        rates = out["answer_rates"] or {}
        if not isinstance(rates, dict):
            raise ValueError("answer_rates must map answer kinds to probabilities")
        for kind, value in rates.items():
            if kind not in ANSWER_KINDS:
                raise ValueError(f"answer_rates: unknown answer kind {kind!r}")
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"answer_rates[{kind!r}] must be a probability between 0 and 1")
        out["answer_rates"] = {k: float(v) for k, v in rates.items()}
    for key in ("graphql_cpu_ms_base", "graphql_cpu_ms_per_node", "secondary_default_wait"):
        if key in out and (not _is_number(out[key]) or out[key] < 0):
            raise ValueError(f"{key} must be a number >= 0")
    for key in ("graphql_cpu_seconds_per_minute", "resource_limit_nodes"):
        if key in out and out[key] is not None and (not _is_number(out[key]) or out[key] < 0):
            raise ValueError(f"{key} must be a number >= 0 or null")
    if "timeout_penalty_points" in out:
        value = out["timeout_penalty_points"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("timeout_penalty_points must be an integer >= 0")
    if "punish_early" in out and not isinstance(out["punish_early"], bool):
        raise ValueError("punish_early must be true or false")
    return out


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def normalize_answer(kind: object, count: object, token: object, options: dict) -> dict:
    """Validate one inject() call; returns the stored form. ValueError names the bad value."""
    if kind not in ANSWER_KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; known: {', '.join(ANSWER_KINDS)}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    if token is not None and not isinstance(token, str):
        raise ValueError(f"token must be a token name or null, got {token!r}")
    unknown = set(options) - ANSWER_OPTIONS[kind]
    if unknown:
        raise ValueError(f"unknown option(s) for {kind}: {', '.join(sorted(unknown))}")
    opts = dict(options)
    if "retry_after" in opts and opts["retry_after"] not in (*RETRY_AFTER_FORMS, None):
        raise ValueError(
            f"retry_after must be one of {', '.join(RETRY_AFTER_FORMS)}, got {opts['retry_after']!r}"
        )
    wait = opts.get("wait")
    if wait is not None and (isinstance(wait, bool) or not isinstance(wait, int) or wait < 0):
        raise ValueError(f"wait must be an integer number of seconds >= 0, got {opts['wait']!r}")
    if kind == "rest_primary" and opts.get("status") not in (*PRIMARY_STATUSES, None):
        raise ValueError(f"status must be 403 or 429, got {opts['status']!r}")
    if kind == "foreign_redirect" and opts.get("status") not in (*REDIRECT_STATUSES, None):
        raise ValueError(f"status must be 302 or 307, got {opts['status']!r}")
    if "body" in opts and opts["body"] not in TIMEOUT_BODIES:
        raise ValueError(f"body must be one of {', '.join(TIMEOUT_BODIES)}, got {opts['body']!r}")
    return {"kind": kind, "left": count, "token": token, "options": opts}


# Settings that set_faults() / POST /_emulator/faults may change at runtime.
FAULT_FIELDS = frozenset(
    f.name for f in fields(EmulatorConfig) if f.name not in ("tokens", "apps", "window_seconds", "log_limit")
)

_KEY_SPLIT = re.compile(r":(?=(?:collab|core|graphql|search|scopes|valid|account)=)")
_TOKEN_START = re.compile(r",(?=\s*[A-Za-z0-9_.\-]+=)")

TOKEN_SYNTAX = """\
token syntax: NAME=VALUE[:collab=*|owner/a,owner/b][:core=5000][:graphql=5000][:search=30]
              [:scopes=repo+read:user][:valid=false][:account=NAME]
  collab   repos where the token is a collaborator (sees stargazers/watchers); default none
  scopes   OAuth scopes joined with '+'; default repo+read:user ('email' needs user:email or read:user)
  account  GitHub account of the token (default: NAME); tokens of one account share its quota
EMULATOR_TOKENS holds several specs separated by ';' or newlines (or ',' before the next NAME=)."""  # noqa: S105


def parse_token_spec(text: str) -> TokenConfig:
    head, *options = _KEY_SPLIT.split(text.strip())
    name, sep, value = head.partition("=")
    if not sep or not name or not value:
        raise ValueError("token spec must start with NAME=VALUE")
    tok = TokenConfig(name=name.strip(), token=value.strip())
    for opt in options:
        key, _, val = opt.partition("=")
        if key == "collab":
            tok.collaborator_repos = tuple(v.strip() for v in val.split(",") if v.strip())
        elif key in ("core", "graphql", "search"):
            setattr(tok, f"{key}_limit", int(val))
        elif key == "scopes":
            tok.scopes = tuple(s for s in val.split("+") if s)
        elif key == "valid":
            tok.valid = val.lower() not in ("0", "false", "no")
        elif key == "account":
            tok.account = val.strip() or tok.name
    return tok


def parse_token_list(text: str) -> list[TokenConfig]:
    specs: list[str] = []
    for chunk in re.split(r"[;\n]", text):
        specs.extend(s for s in _TOKEN_START.split(chunk) if s.strip())
    return [parse_token_spec(s) for s in specs]
