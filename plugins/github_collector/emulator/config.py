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
_CHECKED_FAULTS = (
    *_RATE_FIELDS,
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

    def __post_init__(self) -> None:
        self.scopes = tuple(self.scopes)
        self.collaborator_repos = tuple(self.collaborator_repos)


@dataclass
class EmulatorConfig:
    tokens: list[TokenConfig] = field(default_factory=list)
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
    return out


# Settings that set_faults() / POST /_emulator/faults may change at runtime.
FAULT_FIELDS = frozenset(
    f.name for f in fields(EmulatorConfig) if f.name not in ("tokens", "window_seconds", "log_limit")
)

_KEY_SPLIT = re.compile(r":(?=(?:collab|core|graphql|search|scopes|valid)=)")
_TOKEN_START = re.compile(r",(?=\s*[A-Za-z0-9_.\-]+=)")

TOKEN_SYNTAX = """\
token syntax: NAME=VALUE[:collab=*|owner/a,owner/b][:core=5000][:graphql=5000][:search=30]
              [:scopes=repo+read:user][:valid=false]
  collab   repos where the token is a collaborator (sees stargazers/watchers); default none
  scopes   OAuth scopes joined with '+'; default repo+read:user ('email' needs user:email or read:user)
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
    return tok


def parse_token_list(text: str) -> list[TokenConfig]:
    specs: list[str] = []
    for chunk in re.split(r"[;\n]", text):
        specs.extend(s for s in _TOKEN_START.split(chunk) if s.strip())
    return [parse_token_spec(s) for s in specs]
