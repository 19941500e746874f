"""GitHub quota records and the token pool, kept in Redis.

Every response's ``x-ratelimit-*`` headers land here, per token fingerprint and resource
(``core``, ``graphql``). Workers on any machine share one view through Redis, and every
decision that must not race (apply a newer state, lease a token, reserve a budget) is a
single Lua script, so it is atomic without locks.

Keys (all under the store's prefix; a token appears only as its fingerprint):

- ``quota:{fp}:{resource}``  hash limit/remaining/used/reset
- ``lease:{fp}``             who is sending a request with this token right now (one at a time)
- ``freed:{fp}``             pushed to when that lease is freed: wakes a worker waiting for it
- ``pace:{fp}:{resource}``   the token's requests in the last pace window (secondary limits)
- ``cooldown:{fp}``          epoch until which a secondary limit told us to keep off this token
- ``rejected:{fp}``          GitHub answered 401 for this token
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
REJECTED_TTL_S = 86_400
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

# Lease the usable token with the most remaining quota. KEYS come in five groups of n:
# quota, lease, cooldown, rejected, pace. Returns {index} on success, {0, 'busy'} when every
# usable token is leased, {-1, earliest_ready} when none has quota (or per-minute room),
# {-2} when all rejected, {-3, limit} when no token's whole window can pay the cost above the
# reserve (a reserve set at or above the token's limit would otherwise wait forever).
# pace is a sorted set of the token's requests in the last ARGV[9] seconds: GitHub's
# secondary limits count points per minute, so a token with ARGV[8] of them is not used
# until the oldest leaves the window (ARGV[8] = 0 turns pacing off).
_LEASE = """
local n = tonumber(ARGV[6]); local now = tonumber(ARGV[1]); local cost = tonumber(ARGV[2])
local reserve = tonumber(ARGV[3])
local best = 0; local best_rem = -1; local busy = 0; local earliest = -1; local alive = 0
local too_small = 0; local small_limit = -1
local prefer = tonumber(ARGV[7]); local per_window = tonumber(ARGV[8]); local window = tonumber(ARGV[9])
for i = 1, n do
  local h0 = redis.call('HGET', KEYS[i], 'limit')
  if h0 and tonumber(h0) - cost < reserve then
    too_small = too_small + 1; small_limit = tonumber(h0)
  elseif redis.call('EXISTS', KEYS[3*n + i]) == 0 then
    alive = alive + 1
    local cd = tonumber(redis.call('GET', KEYS[2*n + i]) or '0')
    local paced = -1
    if per_window > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[4*n + i], '-inf', now - window)
      if redis.call('ZCARD', KEYS[4*n + i]) >= per_window then
        local oldest = redis.call('ZRANGE', KEYS[4*n + i], 0, 0, 'WITHSCORES')
        paced = tonumber(oldest[2]) + window
      end
    end
    if cd > now or paced > now then
      local ready = cd
      if paced > ready then ready = paced end
      if earliest < 0 or ready < earliest then earliest = ready end
    else
      local h = redis.call('HMGET', KEYS[i], 'limit', 'remaining', 'reset')
      local rem = cost + reserve
      local ok = true
      if h[1] then
        local reset = tonumber(h[3])
        if reset <= now then rem = tonumber(h[1]) else rem = tonumber(h[2]) end
        if rem - cost < reserve then
          ok = false
          local ready = reset
          if ready <= now then ready = now end
          if earliest < 0 or ready < earliest then earliest = ready end
        end
      end
      if ok then
        if redis.call('EXISTS', KEYS[n + i]) == 1 then
          busy = 1
        elseif i == prefer then
          best = i; best_rem = 1e18
        elseif rem > best_rem then
          best = i; best_rem = rem
        end
      end
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
return {-1, tostring(earliest)}
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
# them), set a cool-down if asked (ARGV[6] > 0, for ARGV[7] s), then free the token's lease if
# ARGV[8] still holds it. KEYS: quota record, cooldown, lease, freed. The token's records are
# current before any other worker can lease it, and the whole thing costs one round trip.
_SETTLE = (
    _APPLY_IF_NEWER
    + _WAKE
    + """
if ARGV[1] == '1' then apply(KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) end
if tonumber(ARGV[6]) > 0 then redis.call('SET', KEYS[2], ARGV[6], 'EX', ARGV[7]) end
if redis.call('GET', KEYS[3]) == ARGV[8] then redis.call('DEL', KEYS[3]); wake(KEYS[4]) end
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


@dataclass(frozen=True)
class Reservation:
    granted: bool
    available: int
    held: int
    earliest_reset: float | None


class QuotaStore:
    """Shared quota state and token pool for a fixed list of token fingerprints."""

    def __init__(
        self,
        redis,
        prefix: str = "ghc:",
        reserve: int = 50,
        *,
        per_minute: Mapping[str, int] | None = None,
        pace_window_s: float = 60.0,
        lease_ttl_ms: int = LEASE_TTL_MS,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.reserve = int(reserve)
        # Requests allowed per token and resource in any pace window (0 = no pacing).
        rates = DEFAULT_PACE if per_minute is None else per_minute
        self.pace_window_s = float(pace_window_s)
        self.per_window = {r: int(rates.get(r, 0) * self.pace_window_s / 60) for r in RESOURCES}
        self.lease_ttl_ms = int(lease_ttl_ms)
        self._update = redis.register_script(_UPDATE)
        self._lease = redis.register_script(_LEASE)
        self._release = redis.register_script(_RELEASE)
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._spend = redis.register_script(_SPEND)

    # -- keys ---------------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def quota_key(self, fp: str, resource: str) -> str:
        return self._k("quota", fp, resource)

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
    ) -> None:
        """End a request: apply ``state`` to the token's ``resource`` record (if newer), keep
        every worker off the token until ``cool_until`` (if given), and release the lease."""
        fp = lease.fingerprint
        st = state or QuotaState(0, 0, 0, 0)
        ttl = max(1, int(cool_until - time.time()) + 1) if cool_until else 0
        self._settle(
            keys=[
                self.quota_key(fp, resource),
                self._k("cooldown", fp),
                self._k("lease", fp),
                self._k("freed", fp),
            ],
            args=[
                "1" if state else "0",
                st.limit,
                st.remaining,
                st.used,
                st.reset,
                repr(float(cool_until)) if cool_until else 0,
                ttl,
                lease.owner,
            ],
        )

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
        """Fingerprints that have no record yet for some resource (to seed from /rate_limit)."""
        fps = list(fps)
        pipe = self.redis.pipeline(transaction=False)
        for fp in fps:
            for r in RESOURCES:
                pipe.exists(self.quota_key(fp, r))
        found = pipe.execute()
        return [
            fp for i, fp in enumerate(fps) if not all(found[i * len(RESOURCES) : (i + 1) * len(RESOURCES)])
        ]

    def snapshot(self, fps: Iterable[str]) -> dict[str, dict[str, QuotaState | None]]:
        return {fp: {r: self.state(fp, r) for r in RESOURCES} for fp in fps}

    # -- token health -------------------------------------------------------------------
    def mark_rejected(self, fp: str) -> None:
        self.redis.set(self._k("rejected", fp), "1", ex=REJECTED_TTL_S)

    def clear_rejected(self, fp: str) -> None:
        self.redis.delete(self._k("rejected", fp))

    def is_rejected(self, fp: str) -> bool:
        return bool(self.redis.exists(self._k("rejected", fp)))

    def cool_down(self, fp: str, until: float) -> None:
        """Keep every worker off a token until ``until`` (secondary limit on that token)."""
        ttl = max(1, int(until - time.time()) + 1)
        self.redis.set(self._k("cooldown", fp), repr(float(until)), ex=ttl)

    def cooling_until(self, fp: str) -> float:
        """Epoch until which a secondary limit keeps every worker off this token (0 if none)."""
        raw = self.redis.get(self._k("cooldown", fp))
        return float(raw) if raw else 0.0

    # -- leasing --------------------------------------------------------------------------
    def lease_token(self, fp: str, max_wait: float = 60.0) -> Lease | None:
        """Lease this one token for a request that costs no quota (GET /rate_limit), waiting
        while another request holds it. None if the token cools down after a secondary limit,
        or is still held after ``max_wait`` seconds.

        Free requests are requests in flight all the same: without the lease, a process reading
        a token's /rate_limit would send while another process's request with that token is
        still open, which breaks GitHub's one-request-at-a-time rule for the token.
        """
        owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex}"
        started = next_reap = time.monotonic()
        while True:
            if self.cooling_until(fp) > time.time():
                return None
            if self.redis.set(self._k("lease", fp), owner, nx=True, px=self.lease_ttl_ms):
                return Lease(-1, fp, owner)
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

        Raises QuotaExhausted (with the earliest time a token is usable again) when no token
        can pay ``cost`` above its reserve, and NoUsableToken when every token was rejected.
        """
        now = time.time() if now is None else now
        n = len(fps)
        keys = (
            [self.quota_key(fp, resource) for fp in fps]
            + [self._k("lease", fp) for fp in fps]
            + [self._k("cooldown", fp) for fp in fps]
            + [self._k("rejected", fp) for fp in fps]
            + [self._k("pace", fp, resource) for fp in fps]
        )
        # host:pid lets a waiting process on the same host free the lease of a killed one.
        owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex}"
        pref = fps.index(prefer) + 1 if prefer in fps else 0
        args = [now, cost, self.reserve, owner, self.lease_ttl_ms, n, pref]
        res = self._lease(keys=keys, args=[*args, self.per_window.get(resource, 0), self.pace_window_s])
        code = int(res[0])
        if code > 0:
            return Lease(code - 1, fps[code - 1], owner)
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
        raise QuotaExhausted(resource, earliest if earliest > 0 else now + 60)

    def release(self, lease: Lease) -> None:
        fp = lease.fingerprint
        self._release(keys=[self._k("lease", fp), self._k("freed", fp)], args=[lease.owner])

    def wait_for_release(self, fps: Iterable[str], timeout: float) -> None:
        """Block until a lease on one of ``fps`` is freed, or for ``timeout`` s at most."""
        self.redis.blpop([self._k("freed", fp) for fp in fps], timeout=timeout)

    def reap_dead_leases(self, fps: Iterable[str]) -> list[str]:
        """Free leases held by processes of this host and pid namespace that no longer exist
        (a killed worker).

        Leases of other hosts or containers are left to their TTL: their liveness cannot be
        seen from here.
        """
        freed = []
        for fp in fps:
            raw = self.redis.get(self._k("lease", fp))
            owner = raw.decode() if isinstance(raw, bytes) else raw
            host, _, rest = (owner or "").partition(":")
            pid = rest.partition(":")[0]
            if host != _HOST or not pid.isdigit() or _alive(int(pid)):
                continue
            if self._release(keys=[self._k("lease", fp), self._k("freed", fp)], args=[owner]):
                freed.append(fp)
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

        The hold ends at the current windows' reset, or after ``fallback_ttl`` seconds when no
        record has a future reset.
        """
        now = time.time() if now is None else now
        n = len(fps)
        keys = (
            [self.quota_key(fp, resource) for fp in fps]
            + [self._k("rejected", fp) for fp in fps]
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
