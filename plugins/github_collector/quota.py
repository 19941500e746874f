"""GitHub quota records and the token pool, kept in Redis.

Every response's ``x-ratelimit-*`` headers land here, per token fingerprint and resource
(``core``, ``graphql``). Workers on any machine share one view through Redis, and every
decision that must not race (apply a newer state, lease a token, reserve a budget) is a
single Lua script, so it is atomic without locks.

Quota belongs to the GitHub account, not to the token: several tokens of one user share one
budget, one concurrency limit and one set of secondary limits. So every record below is kept
per account (``accounts.py`` finds a token's account once, with GET /user); a token whose
account is not known is its own account, named by its fingerprint.

Keys (all under the store's prefix and the hash tag ``{gh-quota}``, so the multi-key scripts
run on Redis Cluster too; a token appears only as its fingerprint):

- ``account:{fp}``                  the token's account (``-`` = GET /user could not tell)
- ``quota:{account}:{resource}``    hash limit/remaining/used/reset
- ``lease:{account}``               who is sending a request for this account right now (one at a time)
- ``freed:{account}``               pushed to when that lease is freed: wakes a waiting worker
- ``pace:{account}:{resource}``     the account's requests in the last pace window (secondary limits)
- ``cooldown:{account}``            epoch until which a secondary limit keeps every token of it idle
- ``cooldown:*pool*``                 the same for every token: a limit answer to a token whose
                                     account is not known yet may be any account's
- ``notbefore:{account}:{resource}`` epoch before which no request of that resource may start
  (reset + 1 s after a primary limit)
- ``gap:{account}:graphql``         epoch before which the account's next GraphQL query may not
  start: GitHub's GraphQL CPU budget (60 s per minute), a pause, not a limit
- ``streak:{account}``              secondary limit answers in a row (the doubling of the wait)
- ``unauthorized:{fp}``             GitHub answered 401 once for this token: the next 401 rejects it,
  any accepted answer clears it
- ``rejected:{fp}``                 GitHub answered 401 twice in a row for this token (1 h)
- ``reservations:{resource}`` / ``reservations_exp:{resource}``  budgets held by running batches
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from github_collector.errors import ConfigError, NoUsableToken, QuotaExhausted

RESOURCES = ("core", "graphql")
LEASE_TTL_MS = 45_000  # default: longer than a request may take (connect + read timeout)
# A token GitHub refused twice in a row rests this long; any later 200 with it (the plan's
# token check) clears the mark at once.
REJECTED_TTL_S = 3_600
ACCOUNT_TTL_S = 30 * 86_400  # a token's account never changes; the TTL only bounds stale keys
UNKNOWN_ACCOUNT_TTL_S = 86_400  # GET /user could not tell: ask again after a day
NO_ACCOUNT = "-"
POOL = "*pool*"  # not a fingerprint nor an account id: the key of a hold on every token
UNAUTHORIZED_TTL_S = 600  # a first 401 waits this long for a second look before it is forgotten
HASH_TAG = "{gh-quota}"
# GitHub's secondary limits: 900 points/min for REST, 2,000 for GraphQL; a GET or a query
# costs 1. Pacing keeps every token at 80% of them, leaving room for clock skew and for
# other clients of the same token.
SECONDARY_PER_MINUTE = {"core": 900, "graphql": 2000}
DEFAULT_PACE = {r: int(n * 0.8) for r, n in SECONDARY_PER_MINUTE.items()}


def _process_space() -> str:
    """Where this process's pid means something: the host name plus the pid namespace.

    Containers can share a host name (``network_mode: host``) while each has its own pids, so
    a pid is comparable only between processes of one namespace.
    """
    host = socket.gethostname().replace(":", "_")
    try:
        ns = os.readlink("/proc/self/ns/pid")  # 'pid:[4026531836]'
    except OSError:  # not Linux, or /proc not mounted
        return host
    return f"{host}@{ns.removeprefix('pid:[').removesuffix(']')}"


_HOST = _process_space()


def fingerprint(token: str) -> str:
    """A short, stable, non-reversible name for a token, safe for logs and keys."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class QuotaState:
    limit: int
    remaining: int
    used: int
    reset: int

    def available(self, now: float) -> int:
        """Remaining units, counting a window whose reset has passed as full again."""
        return self.limit if self.reset <= now else self.remaining


# Apply a state only if it is newer: a later window, or the same window with more used.
_APPLY_IF_NEWER = """
local function apply(key, limit, remaining, used, reset)
  local cur = redis.call('HMGET', key, 'reset', 'used')
  local cur_reset = tonumber(cur[1] or '-1'); local cur_used = tonumber(cur[2] or '-1')
  if tonumber(reset) > cur_reset or (tonumber(reset) == cur_reset and tonumber(used) >= cur_used) then
    redis.call('HSET', key, 'limit', limit, 'remaining', remaining, 'used', used, 'reset', reset)
    return 1
  end
  return 0
end
"""
_UPDATE = _APPLY_IF_NEWER + "return apply(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"

# Count units spent against a reservation that still exists (an expired one is not recreated).
_SPEND = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""

# Lease the usable token with the most remaining quota. KEYS come in seven groups of n (one
# entry per candidate token, keyed by its account): quota, lease, cooldown, rejected (the
# token's own), pace, notbefore, gap. Tokens of one account share every key but the last-but-two,
# so an account never has two requests in flight whichever of its tokens is asked.
# Returns {index} on success, {0, 'busy'} when every usable token is leased, {-1,
# earliest_ready, spacing} when none may send now (spacing = 1 when only the GraphQL gap
# holds that token back, a pause of seconds rather than a limit), {-2} when all rejected, {-3, limit} when no token's
# whole window can pay the cost above the reserve (a reserve set at or above the token's
# limit would otherwise wait forever).
# A token is not ready before its account's cool-down (secondary limit), its not-before time
# for this resource (reset + pad after a primary limit, GraphQL spacing), its pace window
# (ARGV[8] requests per ARGV[9] s; 0 turns pacing off) and, when its record cannot pay, its
# window's reset + ARGV[10] (reset headers are whole seconds).
_LEASE = """
local n = tonumber(ARGV[6]); local now = tonumber(ARGV[1]); local cost = tonumber(ARGV[2])
local reserve = tonumber(ARGV[3])
local best = 0; local best_rem = -1; local busy = 0; local earliest = -1; local alive = 0
local too_small = 0; local small_limit = -1
local prefer = tonumber(ARGV[7]); local per_window = tonumber(ARGV[8]); local window = tonumber(ARGV[9])
local pad = tonumber(ARGV[10]); local spacing = 0
local hold = tonumber(redis.call('GET', KEYS[7*n + 1]) or '0')
for i = 1, n do
  local h = redis.call('HMGET', KEYS[i], 'limit', 'remaining', 'reset')
  if h[1] and tonumber(h[1]) - cost < reserve then
    too_small = too_small + 1; small_limit = tonumber(h[1])
  elseif redis.call('EXISTS', KEYS[3*n + i]) == 0 then
    alive = alive + 1
    local ready = tonumber(redis.call('GET', KEYS[2*n + i]) or '0')
    if hold > ready then ready = hold end
    local nb = tonumber(redis.call('GET', KEYS[5*n + i]) or '0')
    if nb > ready then ready = nb end
    local gap = tonumber(redis.call('GET', KEYS[6*n + i]) or '0')
    if per_window > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[4*n + i], '-inf', now - window)
      if redis.call('ZCARD', KEYS[4*n + i]) >= per_window then
        local oldest = redis.call('ZRANGE', KEYS[4*n + i], 0, 0, 'WITHSCORES')
        local paced = tonumber(oldest[2]) + window
        if paced > ready then ready = paced end
      end
    end
    local rem = cost + reserve
    if h[1] then
      local reset = tonumber(h[3])
      if reset + pad <= now then rem = tonumber(h[1]) else rem = tonumber(h[2]) end
      if rem - cost < reserve and reset + pad > ready then ready = reset + pad end
    end
    local hard = ready
    if gap > ready then ready = gap end
    if ready > now then
      if earliest < 0 or ready < earliest then
        earliest = ready
        if hard <= now then spacing = 1 else spacing = 0 end
      end
    elseif redis.call('EXISTS', KEYS[n + i]) == 1 then
      busy = 1
    elseif i == prefer then
      best = i; best_rem = 1e18
    elseif rem > best_rem then
      best = i; best_rem = rem
    end
  end
end
if best > 0 then
  redis.call('SET', KEYS[n + best], ARGV[4], 'PX', ARGV[5])
  if per_window > 0 then
    redis.call('ZADD', KEYS[4*n + best], now, ARGV[4])
    redis.call('EXPIRE', KEYS[4*n + best], math.ceil(window) + 1)
  end
  return {best}
end
if alive == 0 and too_small > 0 then return {-3, tostring(small_limit)} end
if alive == 0 then return {-2} end
if busy == 1 then return {0, 'busy'} end
return {-1, tostring(earliest), spacing}
"""

# Freeing a lease also pushes to the token's ``freed`` list, which wakes one worker blocked
# waiting for it (BLPOP), so a busy token passes from worker to worker without a polling gap.
_WAKE = """
local function wake(key)
  redis.call('LPUSH', key, '1'); redis.call('LTRIM', key, 0, 0); redis.call('PEXPIRE', key, 1000)
end
"""

# KEYS: lease, freed. ARGV: owner.
_RELEASE = (
    _WAKE
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]); wake(KEYS[2]); return 1 end
return 0
"""
)

# After a request, in one step: apply its rate-limit headers (ARGV[1] = '1' when it had
# them), keep the whole account idle until ARGV[6] (a secondary limit; 0 = no), keep the
# resource idle until ARGV[8] (primary limit, GraphQL spacing; 0 = no), clear the account's
# secondary streak unless ARGV[10] = '1' (this answer was a limit), then free the account's
# lease if ARGV[9] still holds it; ARGV[11] > 0 sets the GraphQL spacing gap; ARGV[12] = '1'
# (GitHub accepted the token) clears its first-401 mark. KEYS: quota record, cooldown, lease,
# freed, notbefore, streak, gap, the token's unauthorized mark. The account's records are current before any other worker can lease it, and the
# whole thing costs one round trip. ARGV[7]: ms the longer of the two marks must live.
_SETTLE = (
    _APPLY_IF_NEWER
    + _WAKE
    + """
local function raise_to(key, value, ttl)
  local cur = tonumber(redis.call('GET', key) or '0')
  if tonumber(value) > cur then redis.call('SET', key, value, 'PX', ttl) end
end
if ARGV[1] == '1' then apply(KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) end
if tonumber(ARGV[6]) > 0 then raise_to(KEYS[2], ARGV[6], ARGV[7]) end
if tonumber(ARGV[8]) > 0 then raise_to(KEYS[5], ARGV[8], ARGV[7]) end
if tonumber(ARGV[11]) > 0 then raise_to(KEYS[7], ARGV[11], ARGV[7]) end
if ARGV[10] ~= '1' then redis.call('DEL', KEYS[6]) end
if ARGV[12] == '1' then redis.call('DEL', KEYS[8]) end
if redis.call('GET', KEYS[3]) == ARGV[9] then redis.call('DEL', KEYS[3]); wake(KEYS[4]) end
return 1
"""
)

# Reserve a budget for a batch if the pool covers it above every token's reserve, after
# what other batches hold. A reservation lives until its batch releases it or the current
# windows reset (the refill voids it), so a stalled batch never blocks others for long.
# An amount above the pool's whole capacity is capped to it, so it can be granted at all.
# KEYS: n quota keys, n rejected keys, then the reservations and reservations_exp hashes.
# Returns {granted, available, held, wake_at}: wake_at is when asking again can succeed.
_RESERVE = """
local n = tonumber(ARGV[6]); local now = tonumber(ARGV[1]); local reserve = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local avail = 0; local capacity = 0; local earliest = -1; local latest = -1
for i = 1, n do
  if redis.call('EXISTS', KEYS[n + i]) == 0 then
    local h = redis.call('HMGET', KEYS[i], 'limit', 'remaining', 'reset')
    if h[1] then
      local limit = tonumber(h[1]); local reset = tonumber(h[3]); local rem
      if reset <= now then rem = limit else rem = tonumber(h[2]) end
      if rem > reserve then avail = avail + rem - reserve end
      if limit > reserve then capacity = capacity + limit - reserve end
      if reset > now then
        if earliest < 0 or reset < earliest then earliest = reset end
        if reset > latest then latest = reset end
      end
    end
  end
end
if amount > capacity then amount = capacity end
local rk = KEYS[2*n + 1]; local ek = KEYS[2*n + 2]
local held = 0
local ids = redis.call('HKEYS', rk)
for _, id in ipairs(ids) do
  local exp = tonumber(redis.call('HGET', ek, id) or '0')
  if exp <= now then
    redis.call('HDEL', rk, id); redis.call('HDEL', ek, id)
  elseif id ~= ARGV[4] then
    local v = tonumber(redis.call('HGET', rk, id) or '0')
    if v > 0 then held = held + v end
    if earliest < 0 or exp < earliest then earliest = exp end
  end
end
if avail - held >= amount then
  local exp = latest
  if exp <= now then exp = now + tonumber(ARGV[5]) end
  redis.call('HSET', rk, ARGV[4], amount)
  redis.call('HSET', ek, ARGV[4], exp)
  return {1, avail, held, tostring(earliest)}
end
return {0, avail, held, tostring(earliest)}
"""


@dataclass(frozen=True)
class Lease:
    index: int
    fingerprint: str
    owner: str
    account: str = ""  # the account whose single request slot this lease holds
    resource: str = "core"

    @property
    def acct(self) -> str:
        return self.account or self.fingerprint


@dataclass(frozen=True)
class Reservation:
    granted: bool
    available: int
    held: int
    earliest_reset: float | None


class QuotaStore:
    """Shared quota state and token pool for a fixed list of token fingerprints.

    Methods take fingerprints; records are read and written under each token's account
    (``set_account``/``load_accounts``), or under the fingerprint while it is not known.
    """

    def __init__(
        self,
        redis,
        prefix: str = "ghc:",
        reserve: int = 50,
        *,
        per_minute: Mapping[str, int] | None = None,
        pace_window_s: float = 60.0,
        lease_ttl_ms: int = LEASE_TTL_MS,
        reset_pad: float = 1.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.reserve = int(reserve)
        # Requests allowed per account and resource in any pace window (0 = no pacing).
        rates = DEFAULT_PACE if per_minute is None else per_minute
        self.pace_window_s = float(pace_window_s)
        self.per_window = {r: int(rates.get(r, 0) * self.pace_window_s / 60) for r in RESOURCES}
        self.lease_ttl_ms = int(lease_ttl_ms)
        self.reset_pad = float(reset_pad)
        self._accounts: dict[str, str] = {}
        self._missed: dict[str, float] = {}  # fingerprint -> when its account was last not found
        self._own: set[str] = set()  # GET /user could not tell: the token is its own account
        self._update = redis.register_script(_UPDATE)
        self._lease = redis.register_script(_LEASE)
        self._release = redis.register_script(_RELEASE)
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._spend = redis.register_script(_SPEND)

    # -- keys ---------------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return f"{self.prefix}{HASH_TAG}:" + ":".join(parts)

    def quota_key(self, fp: str, resource: str) -> str:
        return self._k("quota", self.account_of(fp), resource)

    # -- accounts -------------------------------------------------------------------------
    def account_of(self, fp: str) -> str:
        """The account a token's records live under: its own fingerprint until known."""
        if fp not in self._accounts:
            self._load_missing([fp])
        return self._accounts.get(fp, fp)

    def _load_missing(self, fps: Iterable[str]) -> None:
        """Read the accounts this store has not seen yet (any store instance, any process,
        must key a token's records alike). A token not resolved yet is looked up again after
        a few seconds, not on every call."""
        now = time.monotonic()
        todo = [fp for fp in fps if fp not in self._accounts and self._missed.get(fp, -1e9) < now - 5]
        if todo:
            self.load_accounts(todo)

    def load_accounts(self, fps: Iterable[str]) -> list[str]:
        """Read the cached accounts of ``fps`` (one round trip); returns those not cached."""
        fps = list(fps)
        if not fps:
            return []
        values = self.redis.mget([self._k("account", fp) for fp in fps])
        unknown = []
        now = time.monotonic()
        for fp, raw in zip(fps, values, strict=True):
            if raw is None:
                unknown.append(fp)
                self._missed[fp] = now
                continue
            value = raw.decode() if isinstance(raw, bytes) else raw
            if value == NO_ACCOUNT:
                self._missed[fp] = now + ACCOUNT_TTL_S  # its own account: nothing to look up
                self._own.add(fp)
            else:
                self._accounts[fp] = value
        return unknown

    def set_account(self, fp: str, account: str | None) -> None:
        """Cache a token's account (None: GET /user could not tell; the token is its own)."""
        ttl = ACCOUNT_TTL_S if account else UNKNOWN_ACCOUNT_TTL_S
        self.redis.set(self._k("account", fp), account or NO_ACCOUNT, ex=ttl)
        if account:
            self._accounts[fp] = account
        else:
            self._own.add(fp)

    def treat_as_own(self, fp: str) -> None:
        """This process takes the token as its own account, without caching that in Redis."""
        self._own.add(fp)

    def is_resolved(self, fp: str) -> bool:
        """Whether the token's account is known (or known to be the token's own)."""
        if fp not in self._accounts and fp not in self._own:
            self._load_missing([fp])
        return fp in self._accounts or fp in self._own

    def accounts(self, fps: Iterable[str]) -> dict[str, list[str]]:
        """Account -> its tokens among ``fps``, in order."""
        groups: dict[str, list[str]] = {}
        fps = list(fps)
        self._load_missing(fps)
        for fp in fps:
            groups.setdefault(self.account_of(fp), []).append(fp)
        return groups

    # -- records ------------------------------------------------------------------------
    @staticmethod
    def headers_state(headers: Mapping[str, str], default_resource: str) -> tuple[str, QuotaState] | None:
        """The (resource, state) a response's rate-limit headers give, or None without them."""
        try:
            limit = int(headers["x-ratelimit-limit"])
            remaining = int(headers["x-ratelimit-remaining"])
            reset = int(float(headers["x-ratelimit-reset"]))
        except (KeyError, ValueError, TypeError):
            return None
        try:
            used = int(headers.get("x-ratelimit-used", limit - remaining))
        except (ValueError, TypeError):
            used = limit - remaining
        resource = headers.get("x-ratelimit-resource") or default_resource
        return resource, QuotaState(limit, remaining, used, reset)

    def update_from_headers(self, fp: str, headers: Mapping[str, str], default_resource: str) -> bool:
        """Apply a response's rate-limit headers; stale ones (older window, fewer used) are ignored."""
        got = self.headers_state(headers, default_resource)
        return got is not None and self.set_state(fp, *got)

    def settle(
        self,
        lease: Lease,
        resource: str,
        state: QuotaState | None = None,
        cool_until: float | None = None,
        *,
        not_before: float | None = None,
        gap_until: float | None = None,
        limited: bool = False,
        token_ok: bool = False,
    ) -> None:
        """End a request: apply ``state`` to the account's ``resource`` record (if newer), keep
        every token of the account idle until ``cool_until`` and the lease's resource until
        ``not_before`` (if given, never shortening a longer mark), hold the account's next
        query of that resource until ``gap_until`` (GraphQL spacing), and release the lease.
        ``limited``: the answer was a limit, so the account's secondary streak goes on."""
        acct = lease.acct
        st = state or QuotaState(0, 0, 0, 0)
        latest = max(cool_until or 0, not_before or 0, gap_until or 0)
        ttl_ms = max(1000, int((latest - time.time() + 1) * 1000)) if latest else 1000
        self._settle(
            keys=[
                self._k("quota", acct, resource),
                self._k("cooldown", acct),
                self._k("lease", acct),
                self._k("freed", acct),
                self._k("notbefore", acct, lease.resource),
                self._k("streak", acct),
                self._k("gap", acct, lease.resource),
                self._k("unauthorized", lease.fingerprint),
            ],
            args=[
                "1" if state else "0",
                st.limit,
                st.remaining,
                st.used,
                st.reset,
                repr(float(cool_until)) if cool_until else 0,
                ttl_ms,
                repr(float(not_before)) if not_before else 0,
                lease.owner,
                "1" if limited else "0",
                repr(float(gap_until)) if gap_until else 0,
                "1" if token_ok else "0",
            ],
        )

    def bump_streak(self, lease: Lease) -> int:
        """Count one more secondary limit answer in a row for the lease's account."""
        key = self._k("streak", lease.acct)
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, 3600)
        return int(pipe.execute()[0])

    def set_state(self, fp: str, resource: str, state: QuotaState) -> bool:
        key = self.quota_key(fp, resource)
        return bool(self._update(keys=[key], args=[state.limit, state.remaining, state.used, state.reset]))

    def state(self, fp: str, resource: str) -> QuotaState | None:
        h = self.redis.hgetall(self.quota_key(fp, resource))
        if not h:
            return None
        g = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in h.items()}
        return QuotaState(g["limit"], g["remaining"], g["used"], g["reset"])

    def missing(self, fps: Iterable[str]) -> list[str]:
        """One token per account that has no record yet for some resource (to seed from
        /rate_limit: the account's tokens share its records)."""
        firsts = [group[0] for group in self.accounts(fps).values()]
        pipe = self.redis.pipeline(transaction=False)
        for fp in firsts:
            for r in RESOURCES:
                pipe.exists(self.quota_key(fp, r))
        found = pipe.execute()
        n = len(RESOURCES)
        return [fp for i, fp in enumerate(firsts) if not all(found[i * n : (i + 1) * n])]

    def snapshot(self, fps: Iterable[str]) -> dict[str, dict[str, QuotaState | None]]:
        return {fp: {r: self.state(fp, r) for r in RESOURCES} for fp in fps}

    # -- token and account health ---------------------------------------------------------
    def mark_rejected(self, fp: str) -> None:
        self.redis.set(self._k("rejected", fp), "1", ex=REJECTED_TTL_S)

    def clear_rejected(self, fp: str) -> bool:
        """GitHub accepted the token (a 200): forget any 401 it had. True if it was rejected."""
        pipe = self.redis.pipeline()
        pipe.delete(self._k("rejected", fp))
        pipe.delete(self._k("unauthorized", fp))
        return bool(pipe.execute()[0])

    def note_unauthorized(self, fp: str) -> bool:
        """Count a 401 for a token, whichever worker met it. True when it is the second in a row
        (no answer accepting the token came between): the token is then marked rejected. A
        first one only marks it for a second look."""
        if self.is_rejected(fp):
            return True  # already settled by another worker: not a new first look
        if self.redis.set(self._k("unauthorized", fp), "1", nx=True, ex=UNAUTHORIZED_TTL_S):
            return False
        self.mark_rejected(fp)
        self.redis.delete(self._k("unauthorized", fp))
        return True

    def is_rejected(self, fp: str) -> bool:
        return bool(self.redis.exists(self._k("rejected", fp)))

    def cool_down(self, fp: str, until: float) -> None:
        """Keep every worker off the token's whole account until ``until``."""
        ttl = max(1, int(until - time.time()) + 1)
        self.redis.set(self._k("cooldown", self.account_of(fp)), repr(float(until)), ex=ttl)

    def hold_pool(self, until: float) -> None:
        """Keep every token idle until ``until``: after a limit answer to a token whose
        account is unknown, which may be the account of any other token."""
        ttl = max(1, int(until - time.time()) + 1)
        self.redis.set(self._k("cooldown", POOL), repr(float(until)), ex=ttl)

    def cooling_until(self, fp: str) -> float:
        """Epoch until which a limit answer keeps every token of this token's account idle."""
        raw = self.redis.mget([self._k("cooldown", self.account_of(fp)), self._k("cooldown", POOL)])
        return max(float(v) if v else 0.0 for v in raw)

    def not_before(self, fp: str, resource: str) -> float:
        raw = self.redis.get(self._k("notbefore", self.account_of(fp), resource))
        return float(raw) if raw else 0.0

    def ready_at(self, fps: Iterable[str], resource: str, cost: int = 1, now: float | None = None) -> float:
        """When the first account of ``fps`` (tokens not rejected) can pay ``cost`` of ``resource``
        above the reserve: 0 if one can now, else the earliest epoch (its reset + pad, cool-down or
        not-before mark). A read, not a hold: the lease enforces the reserve when a request goes out.
        """
        now = time.time() if now is None else now
        groups = self.accounts(fp for fp in fps if not self.is_rejected(fp))
        if not groups:
            return 0.0
        pipe = self.redis.pipeline(transaction=False)
        for acct in groups:
            pipe.hmget(self._k("quota", acct, resource), "limit", "remaining", "reset")
            pipe.get(self._k("cooldown", acct))
            pipe.get(self._k("notbefore", acct, resource))
        pipe.get(self._k("cooldown", POOL))
        raw = pipe.execute()
        hold = float(raw.pop() or 0)
        soonest = float("inf")
        for i in range(0, len(raw), 3):
            (limit, remaining, reset), cool, nb = raw[i], raw[i + 1], raw[i + 2]
            ready = max(float(cool or 0), float(nb or 0), hold)
            if limit is not None:
                reset_f = float(reset)
                rem = int(limit) if reset_f + self.reset_pad <= now else int(remaining)
                if rem - cost < self.reserve:
                    ready = max(ready, reset_f + self.reset_pad)
            soonest = min(soonest, ready)
        return soonest if soonest > now else 0.0

    # -- leasing --------------------------------------------------------------------------
    def lease_token(self, fp: str, max_wait: float = 60.0) -> Lease | None:
        """Lease this one token's account for a request that costs no quota (GET /rate_limit,
        GET /user), waiting while another request holds it. None if the account cools down
        after a secondary limit, or is still held after ``max_wait`` seconds.

        Free requests are requests in flight all the same: without the lease, a process reading
        a token's /rate_limit would send while another process's request for that account is
        still open, which breaks GitHub's one-request-at-a-time rule.
        """
        owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex}"
        acct = self.account_of(fp)
        started = next_reap = time.monotonic()
        while True:
            if self.cooling_until(fp) > time.time():
                return None
            if self.redis.set(self._k("lease", acct), owner, nx=True, px=self.lease_ttl_ms):
                return Lease(-1, fp, owner, acct, "core")
            waited = time.monotonic() - started
            if waited >= max_wait:
                return None
            if waited > 1 and time.monotonic() >= next_reap:
                self.reap_dead_leases([fp])  # a killed worker's lease, as GitHubClient._lease does
                next_reap = time.monotonic() + 1
            time.sleep(0.02 + random.random() * 0.05)

    def lease(
        self,
        fps: list[str],
        resource: str,
        cost: int = 1,
        now: float | None = None,
        prefer: str | None = None,
    ) -> Lease | None:
        """Lease the usable token with most remaining quota, or None if all usable ones are busy.

        ``prefer`` names a token to take if it is usable (the one an ETag belongs to, since
        GitHub's ETags are per token and a 304 is free).

        Raises QuotaExhausted (with the earliest time a token may send again) when no token
        can pay ``cost`` above its reserve or may send yet, and NoUsableToken when every
        token was rejected.
        """
        now = time.time() if now is None else now
        n = len(fps)
        self._load_missing(fps)
        accts = [self.account_of(fp) for fp in fps]
        keys = (
            [self._k("quota", a, resource) for a in accts]
            + [self._k("lease", a) for a in accts]
            + [self._k("cooldown", a) for a in accts]
            + [self._k("rejected", fp) for fp in fps]
            + [self._k("pace", a, resource) for a in accts]
            + [self._k("notbefore", a, resource) for a in accts]
            + [self._k("gap", a, resource) for a in accts]
            + [self._k("cooldown", POOL)]
        )
        # host:pid lets a waiting process on the same host free the lease of a killed one.
        owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex}"
        pref = fps.index(prefer) + 1 if prefer in fps else 0
        args = [now, cost, self.reserve, owner, self.lease_ttl_ms, n, pref]
        res = self._lease(
            keys=keys,
            args=[*args, self.per_window.get(resource, 0), self.pace_window_s, self.reset_pad],
        )
        code = int(res[0])
        if code > 0:
            return Lease(code - 1, fps[code - 1], owner, accts[code - 1], resource)
        if code == 0:
            return None
        if code == -2:
            raise NoUsableToken("every configured GitHub token was rejected (401); fix the github connection")
        if code == -3:
            raise ConfigError(
                f"the reserve of {self.reserve} units leaves nothing usable on tokens whose {resource} limit is "
                f"{res[1]}; lower 'reserve' in the github connection's extra"
            )
        earliest = float(res[1])
        exc = QuotaExhausted(resource, earliest if earliest > 0 else now + 60)
        exc.spacing = len(res) > 2 and int(res[2]) == 1
        raise exc

    def release(self, lease: Lease) -> None:
        acct = lease.acct
        self._release(keys=[self._k("lease", acct), self._k("freed", acct)], args=[lease.owner])

    def is_leased(self, fp: str) -> bool:
        return bool(self.redis.exists(self._k("lease", self.account_of(fp))))

    def wait_for_release(self, fps: Iterable[str], timeout: float) -> None:
        """Block until a lease of one of ``fps``' accounts is freed, or for ``timeout`` s at most."""
        self.redis.blpop([self._k("freed", a) for a in self.accounts(fps)], timeout=timeout)

    def reap_dead_leases(self, fps: Iterable[str]) -> list[str]:
        """Free leases held by processes of this host and pid namespace that no longer exist
        (a killed worker). Returns one fingerprint per account freed.

        Leases of other hosts or containers are left to their TTL: their liveness cannot be
        seen from here.
        """
        freed = []
        for acct, group in self.accounts(fps).items():
            key = self._k("lease", acct)
            raw = self.redis.get(key)
            owner = raw.decode() if isinstance(raw, bytes) else raw
            host, _, rest = (owner or "").partition(":")
            pid = rest.partition(":")[0]
            if host != _HOST or not pid.isdigit() or _alive(int(pid)):
                continue
            if self._release(keys=[key, self._k("freed", acct)], args=[owner]):
                freed.append(group[0])
        return freed

    # -- batch budgets ----------------------------------------------------------------------
    def reserve_budget(
        self,
        fps: list[str],
        resource: str,
        amount: int,
        reservation_id: str,
        fallback_ttl: float = 3600,
        now: float | None = None,
    ) -> Reservation:
        """Atomically hold ``amount`` units for a batch if the pool covers it above the reserves.

        Each account counts once, however many of its tokens are configured. The hold ends at
        the current windows' reset, or after ``fallback_ttl`` seconds when no record has a
        future reset.
        """
        now = time.time() if now is None else now
        # one token per account that is not rejected: an account's budget is counted once
        alive = [fp for fp in fps if not self.is_rejected(fp)] or list(fps)
        firsts = [group[0] for group in self.accounts(alive).values()]
        n = len(firsts)
        keys = (
            [self.quota_key(fp, resource) for fp in firsts]
            + [self._k("rejected", fp) for fp in firsts]
            + [self._k("reservations", resource), self._k("reservations_exp", resource)]
        )
        res = self._reserve(keys=keys, args=[now, self.reserve, int(amount), reservation_id, fallback_ttl, n])
        earliest = float(res[3])
        return Reservation(bool(int(res[0])), int(res[1]), int(res[2]), earliest if earliest > 0 else None)

    def spend_reservation(self, reservation_id: str, resource: str, amount: int) -> None:
        """Count units a batch spent against its reservation so it stops holding them."""
        if amount:
            self._spend(keys=[self._k("reservations", resource)], args=[reservation_id, -int(amount)])

    def release_reservation(self, reservation_id: str) -> None:
        pipe = self.redis.pipeline()
        for r in RESOURCES:
            pipe.hdel(self._k("reservations", r), reservation_id)
            pipe.hdel(self._k("reservations_exp", r), reservation_id)
        pipe.execute()
