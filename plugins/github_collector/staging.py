"""Per-run staging area in Redis: records, checkpoints and the plan.

Every DAG run has its own namespace, derived from (dag_id, run_id), so retries and re-runs of
that run find their checkpoints, and overlapping runs (a daily run and a backfill) never see
each other's keys. Under ``{prefix}run:{<digest>}:`` (the braces are a Redis Cluster hash tag:
every key of a run hashes to one slot, as the run's multi-key scripts require there):

- ``plan``                   the run's plan (JSON)
- ``batch:{i}:state``        a batch's checkpoint, a hash: ``state`` (collector.BatchState,
                             zlib-compressed JSON) and ``users``/``links``/``repos``, how many
                             new fields this batch's steps added to each staged hash
- ``batch:{i}:outcome``      done | failed: <reason>
- ``next_batch``             how many batches fetch slots have claimed so far (a counter)
- ``slot:{s}:claimed``       the batches slot ``s`` claimed, in order; a retried or resumed
                             slot finishes these before it claims more
- ``users``                  user_id -> record (full profiles overwrite list-only records)
- ``links``                  "repo_id:user_id:relation" -> record, and "repo_id:#number:relation"
                             -> an authored item (issue, pull request, discussion)
- ``repos``                  requested name -> repo record
- ``stats``                  counters: pages, quota spent, records staged
- ``lost_sentinel``          written with the plan; if it is gone, Redis lost this run's data.
                             A hash holding the run's tallies: ``added:{kind}`` (new fields
                             of each staged hash, the sum of the checkpoints' counts),
                             ``removed:{kind}`` (fields the commit deleted after committing
                             them) and ``commit_time`` (the time the run's rows are stamped with)

A step's records and its checkpoint go in one Lua script (atomic, one round trip): either both
are stored or neither, so a crash can only lose the step in flight, never mis-state what was
staged. The script counts the new fields from HSET/HSETNX's own answers, so at every moment
each staged hash must hold exactly ``added - removed`` fields: any shortfall is data Redis lost
(evicted, expired, deleted), which ``verify`` reports and the commit never presents as complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from github_collector.collector import Step
from github_collector.errors import ConfigError

log = logging.getLogger(__name__)

STAGE_TTL_S = 14 * 86_400  # staged data outlives a long outage, but not forever
KINDS = ("repos", "users", "links")  # commit order: links refer to repos and users


def link_field(lk: dict) -> str:
    """The staged field of a link: one per (repo, user, relation), or per (repo, item number,
    relation) for an authored item (an issue, pull request or discussion)."""
    if "number" in lk:
        return f"{lk['repo_id']}:#{lk['number']}:{lk['relation']}"
    return f"{lk['repo_id']}:{lk['user_id']}:{lk['relation']}"


def run_namespace(prefix: str, dag_id: str, run_id: str) -> str:
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()[:20]
    return f"{prefix}run:{{{digest}}}:"


T = TypeVar("T")


class StagingLost(RuntimeError):
    """The run's staged data vanished from Redis (flushed or restarted without persistence)."""


LOST_MESSAGE = (
    "this run's staging in Redis is gone (Redis was flushed, or restarted without persistence): "
    "what it had staged and not yet committed is lost, so this run cannot complete; nothing of it "
    "is recorded as complete. Clear the whole DAG run (plan included) to collect again"
)


# Claim the next unclaimed batch for a slot, atomically, unless the run's staging is lost.
# KEYS: next_batch, slot's claimed list, lost_sentinel. ARGV: batch count, TTL.
# Returns the batch index, -1 when every batch is claimed, -2 when the staging is lost.
_CLAIM = """
if redis.call('EXISTS', KEYS[3]) == 0 then return -2 end
local i = redis.call('INCR', KEYS[1]) - 1
redis.call('EXPIRE', KEYS[1], ARGV[2])
if i >= tonumber(ARGV[1]) then return -1 end
redis.call('RPUSH', KEYS[2], i)
redis.call('EXPIRE', KEYS[2], ARGV[2])
return i
"""


# Store one collector step, unless the run's staging is lost (then return 0, write nothing).
# KEYS: lost_sentinel, users, links, repos, the batch's state, stats.
# ARGV: TTL, state JSON, pages, core cost, graphql cost, then the counts of (field, value) pairs
# of user list items, full profiles, links and repos, then those pairs in that order. List items
# go in with HSETNX before the full profiles with HSET, so a full profile always wins.
# HSET and HSETNX answer how many fields were new: the checkpoint and the sentinel add them up.
_WRITE_STEP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ttl = ARGV[1]
local i = 10
local function put(key, pairs, nx)
  local added = 0
  local last = i + 2 * pairs - 1
  if nx then
    for j = i, last, 2 do added = added + redis.call('HSETNX', key, ARGV[j], ARGV[j + 1]) end
  else
    local j = i
    while j <= last do  -- in slices: unpack is bounded by Lua's C stack
      local k = math.min(j + 999, last)
      added = added + redis.call('HSET', key, unpack(ARGV, j, k))
      j = k + 1
    end
  end
  i = last + 1
  return added
end
local new = {}
new.users = put(KEYS[2], tonumber(ARGV[6]), true)
new.users = new.users + put(KEYS[2], tonumber(ARGV[7]), false)
new.links = put(KEYS[3], tonumber(ARGV[8]), false)
new.repos = put(KEYS[4], tonumber(ARGV[9]), false)
redis.call('HSET', KEYS[5], 'state', ARGV[2])
for _, kind in ipairs({'users', 'links', 'repos'}) do
  redis.call('HINCRBY', KEYS[5], kind, new[kind])
  redis.call('HINCRBY', KEYS[1], 'added:' .. kind, new[kind])
end
redis.call('EXPIRE', KEYS[5], ttl)
redis.call('HINCRBY', KEYS[6], 'pages', ARGV[3])
if tonumber(ARGV[4]) ~= 0 then redis.call('HINCRBY', KEYS[6], 'cost_core', ARGV[4]) end
if tonumber(ARGV[5]) ~= 0 then redis.call('HINCRBY', KEYS[6], 'cost_graphql', ARGV[5]) end
for k = 1, 4 do redis.call('EXPIRE', KEYS[k], ttl) end
redis.call('EXPIRE', KEYS[6], ttl)
return 1
"""

# Delete committed fields of a staged hash and count them as removed, unless the sentinel is
# gone (then delete nothing and return -1: the commit's next check reports the loss).
# KEYS: the staged hash, lost_sentinel. ARGV: kind, then the fields.
_REMOVE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local n = 0
local j = 2
while j <= #ARGV do
  local k = math.min(j + 999, #ARGV)
  n = n + redis.call('HDEL', KEYS[1], unpack(ARGV, j, k))
  j = k + 1
end
redis.call('HINCRBY', KEYS[2], 'removed:' .. ARGV[1], n)
return n
"""

# The run's commit time: set by the first commit attempt, kept by its retries. nil if lost.
# KEYS: lost_sentinel. ARGV: the time to set if none is.
_COMMIT_TIME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSETNX', KEYS[1], 'commit_time', ARGV[1])
return redis.call('HGET', KEYS[1], 'commit_time')
"""


EVICTION_FIX = (
    "set maxmemory-policy to noeviction on the Redis of the redis_default connection "
    "(CONFIG SET maxmemory-policy noeviction, redis.conf, or the parameter group of a managed "
    "service), or give staging a Redis of its own without a memory limit; "
    "GITHUB_REPO_USERS_ALLOW_EVICTING_REDIS=1 runs anyway, unsafely"
)


def redis_memory_policy(redis) -> tuple[str | None, int | None]:
    """(maxmemory-policy, maxmemory in bytes) of a Redis, None where it does not say.

    Managed services may refuse CONFIG; INFO memory says the same on every Redis since 3.2.
    """
    from redis.exceptions import ResponseError

    try:
        got = {_str(k): _str(v) for k, v in redis.config_get("maxmemory*").items()}
        policy, limit = got.get("maxmemory-policy"), got.get("maxmemory")
    except ResponseError:
        info = redis.info("memory")
        policy, limit = info.get("maxmemory_policy"), info.get("maxmemory")
    return (_str(policy) or None), (int(limit) if limit is not None else None)


def check_redis(redis, allow_evicting: bool) -> None:
    """Refuse a Redis that may evict staged data, or that runs as a cluster.

    Staged keys carry TTLs, so ``volatile-*`` policies (ElastiCache's default is
    ``volatile-lru``) may evict them as readily as ``allkeys-*``; only ``noeviction``, or no
    memory limit at all, keeps them. ``allow_evicting`` turns the refusal into a warning.
    """
    from redis.exceptions import ResponseError

    try:
        cluster = redis.info("cluster").get("cluster_enabled")
    except ResponseError:  # a Redis that hides INFO cluster answers MOVED loudly if it is one
        cluster = None
    if str(cluster) == "1":
        raise ConfigError(
            "the Redis of the redis_default connection runs in cluster mode (cluster_enabled:1), and "
            "this DAG's Redis client is not cluster-aware: use a Redis without cluster mode (a single "
            "node or a replication group with cluster mode disabled) for quota records and staging"
        )
    policy, limit = redis_memory_policy(redis)
    if policy == "noeviction" or limit == 0:
        return
    what = f"maxmemory-policy {policy or 'unknown'}, maxmemory " + (
        f"{limit:,} bytes" if limit is not None else "unknown"
    )
    problem = f"the Redis of the redis_default connection may evict this run's staged records ({what})"
    if allow_evicting:
        log.warning(
            "%s; running anyway (GITHUB_REPO_USERS_ALLOW_EVICTING_REDIS): a run that loses staged "
            "records is recorded 'lost' and must be cleared",
            problem,
        )
        return
    raise ConfigError(f"{problem}: {EVICTION_FIX}")


def _str(v: Any) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


@dataclass
class Tally:
    """What a run's staging holds against what its steps wrote and its commit removed."""

    present: dict[str, int]  # fields each staged hash holds now
    expected: dict[str, int]  # added - removed: what it must hold
    outcomes: dict[int, str | None]
    problems: list[str] = field(default_factory=list)
    tallied: bool = True  # False when the sentinel, which holds the tallies, is gone

    @property
    def intact(self) -> bool:
        return not self.problems

    @property
    def missing(self) -> dict[str, int]:
        return {k: self.expected[k] - self.present[k] for k in KINDS if self.expected[k] > self.present[k]}


class Staging:
    def __init__(self, redis, namespace: str) -> None:
        self.redis = redis
        self.ns = namespace
        self._write = redis.register_script(_WRITE_STEP)
        self._remove = redis.register_script(_REMOVE)
        self._commit_time = redis.register_script(_COMMIT_TIME)

    def key(self, *parts: Any) -> str:
        return self.ns + ":".join(str(p) for p in parts)

    # -- plan -------------------------------------------------------------------------------------
    def save_plan(self, plan: dict) -> None:
        zero = {f"{what}:{kind}": 0 for what in ("added", "removed") for kind in KINDS}
        pipe = self.redis.pipeline()
        pipe.set(self.key("plan"), json.dumps(plan), ex=STAGE_TTL_S)
        pipe.hset(self.key("lost_sentinel"), mapping=zero)
        pipe.expire(self.key("lost_sentinel"), STAGE_TTL_S)
        pipe.execute()

    def load_plan(self) -> dict | None:
        raw = self.redis.get(self.key("plan"))
        return json.loads(raw) if raw else None

    def check_intact(self) -> None:
        """Raise if Redis lost this run's staging since the plan was written."""
        if not self.redis.exists(self.key("lost_sentinel")):
            raise StagingLost(LOST_MESSAGE)

    # -- checkpoints ---------------------------------------------------------------------------------
    def load_state(self, batch: int) -> dict | None:
        raw = self.redis.hget(self.key("batch", batch, "state"), "state")
        return json.loads(zlib.decompress(raw)) if raw else None

    # -- batches of a fetch slot -------------------------------------------------------------
    def _unfinished_claims(self, slot: int) -> list[int]:
        claimed = [int(i) for i in self.redis.lrange(self.key("slot", slot, "claimed"), 0, -1)]
        if not claimed:
            return []
        done = self.redis.mget([self.key("batch", i, "outcome") for i in claimed])
        return [i for i, o in zip(claimed, done, strict=True) if o not in (b"done", "done")]

    def next_batch(self, slot: int, n_batches: int) -> int | None:
        """The batch this slot works on next: one it claimed and did not finish (a retry or
        a resumed deferral), else a newly claimed one; None when every batch is taken.

        Slots claim batches as they go, so a slot that drew small repositories takes more
        of them while another works through a big one.
        """
        unfinished = self._unfinished_claims(slot)
        if unfinished:
            return unfinished[0]
        return self.claim(slot, n_batches)

    def held(self, slot: int) -> list[int]:
        """The batches this slot claimed and did not finish, in the order it claimed them."""
        return self._unfinished_claims(slot)

    def claim(self, slot: int, n_batches: int) -> int | None:
        """Claim a new batch for this slot (after those it holds); None when every batch is taken."""
        script = self.redis.register_script(_CLAIM)
        keys = [self.key("next_batch"), self.key("slot", slot, "claimed"), self.key("lost_sentinel")]
        got = int(script(keys=keys, args=[n_batches, STAGE_TTL_S]))
        if got == -2:
            raise StagingLost(LOST_MESSAGE)
        return None if got < 0 else got

    def peek_batch(self, slot: int, n_batches: int) -> int | None:
        """What next_batch would return, without claiming anything (for the quota gate)."""
        unfinished = self._unfinished_claims(slot)
        if unfinished:
            return unfinished[0]
        taken = int(self.redis.get(self.key("next_batch")) or 0)
        return taken if taken < n_batches else None

    def claims(self) -> dict[int, int]:
        """batch index -> the slot that claimed it."""
        out: dict[int, int] = {}
        for key in self.redis.scan_iter(match=self.key("slot", "*", "claimed"), count=1000):
            slot = int((key.decode() if isinstance(key, bytes) else key)[len(self.ns) :].split(":")[1])
            for i in self.redis.lrange(key, 0, -1):
                out[int(i)] = slot
        return out

    def set_outcome(self, batch: int, outcome: str) -> None:
        self.redis.set(self.key("batch", batch, "outcome"), outcome, ex=STAGE_TTL_S)

    def outcomes(self, n_batches: int) -> dict[int, str | None]:
        vals = self.redis.mget([self.key("batch", i, "outcome") for i in range(n_batches)])
        return {i: (v.decode() if isinstance(v, bytes) else v) for i, v in enumerate(vals)}

    def write_step(self, batch: int, step: Step) -> None:
        """Store a step's records and the batch's new checkpoint atomically, in one round trip.

        One Lua script does it all, and first checks the loss sentinel: if Redis lost the run's
        staging (flushed, restarted without persistence), nothing is written into the emptied
        namespace, where it would look like a complete stage of a run that lost its earlier
        pages. A script runs atomically, and its writes reach the AOF as one MULTI/EXEC.
        """
        items: list[str] = []  # list items: must not replace a full profile staged earlier
        full: list[str] = []
        for u in step.users:
            # A gone account's record replaces its list item, as a full profile would.
            (full if u.get("profile_complete") or u.get("gone") else items).extend(
                (str(u["user_id"]), json.dumps(u))
            )
        links = [v for lk in step.links for v in (link_field(lk), json.dumps(lk))]
        repos = [v for r in step.repos for v in (r["requested"], json.dumps(r))]
        keys = [
            self.key("lost_sentinel"),
            self.key("users"),
            self.key("links"),
            self.key("repos"),
            self.key("batch", batch, "state"),
            self.key("stats"),
        ]
        args = [
            STAGE_TTL_S,
            # The checkpoint is the whole batch's state (~40 KB for 50 repositories), rewritten
            # after every page: compressed, it is ~25x smaller in Redis traffic and the AOF.
            zlib.compress(json.dumps(step.state).encode(), 1),
            step.pages,
            step.cost.get("core", 0),
            step.cost.get("graphql", 0),
            len(items) // 2,
            len(full) // 2,
            len(links) // 2,
            len(repos) // 2,
            *items,
            *full,
            *links,
            *repos,
        ]
        if not int(self._write(keys=keys, args=args)):
            raise StagingLost(LOST_MESSAGE)

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.key("stats")).items()}

    # -- reading for the commit ------------------------------------------------------------------
    def scan(self, kind: str, chunk: int) -> Iterator[tuple[list[bytes], list[dict]]]:
        """Yield (fields, records) chunks of a staged hash; memory stays bounded by ``chunk``."""
        key = self.key(kind)
        cursor = 0
        while True:
            cursor, items = self.redis.hscan(key, cursor, count=chunk)
            if items:
                fields = list(items)
                for i in range(0, len(fields), chunk):
                    part = fields[i : i + chunk]
                    yield part, [json.loads(items[f]) for f in part]
            if cursor == 0:
                break

    def scan_raw(self, kind: str, chunk: int, recent: int = 4) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """Yield (fields, staged JSON values) chunks of a staged hash, values left as stored.

        HSCAN may return a field again while the hash is rehashed. Fields of earlier chunks are
        gone by then, except those of the last ``recent`` chunks, which a committer reading
        ahead may not have deleted yet: a field seen in one of them is skipped, so each staged
        record is committed and counted once.
        """
        key = self.key(kind)
        seen: deque[set[bytes]] = deque(maxlen=recent)
        cursor = 0
        while True:
            cursor, items = self.redis.hscan(key, cursor, count=chunk)
            for earlier in seen:
                for f in earlier.intersection(items):
                    del items[f]
            if items:
                fields = list(items)
                values = list(items.values())
                for i in range(0, len(fields), chunk):
                    part = fields[i : i + chunk]
                    seen.append(set(part))
                    yield part, values[i : i + chunk]
            if cursor == 0:
                break

    def counts(self) -> dict[str, int]:
        """Number of staged records of each kind (HLEN: constant time)."""
        pipe = self.redis.pipeline(transaction=False)
        for kind in KINDS:
            pipe.hlen(self.key(kind))
        return {kind: int(n) for kind, n in zip(KINDS, pipe.execute(), strict=True)}

    def delete_fields(self, kind: str, fields: list[bytes]) -> None:
        """Delete committed fields, counted as removed (nothing if the staging is lost)."""
        if fields:
            self._remove(keys=[self.key(kind), self.key("lost_sentinel")], args=[kind, *fields])

    def commit_time(self, now: str) -> str | None:
        """The time this run's rows are stamped with: ``now`` on the first commit attempt,
        the first attempt's on a retry. None if the staging is lost."""
        return _str(self._commit_time(keys=[self.key("lost_sentinel")], args=[now]))

    def verify(self, n_batches: int) -> Tally:
        """Check every staged key against the tallies the steps and the commit kept.

        Read in one MULTI, so the counts belong together. A staged hash holding fewer fields
        than were added and not yet removed, a finished batch without its checkpoint, or
        checkpoints whose counts do not add up to the run's tally all mean Redis lost data.
        """
        pipe = self.redis.pipeline(transaction=True)
        for kind in KINDS:
            pipe.hlen(self.key(kind))
        pipe.hgetall(self.key("lost_sentinel"))
        for i in range(n_batches):
            pipe.get(self.key("batch", i, "outcome"))
            pipe.hmget(self.key("batch", i, "state"), KINDS)
        got = pipe.execute()
        present = dict(zip(KINDS, (int(n) for n in got[: len(KINDS)]), strict=True))
        sentinel = {_str(k): _str(v) for k, v in got[len(KINDS)].items()}
        tallies = {k: int(v) for k, v in sentinel.items() if k.startswith(("added:", "removed:"))}
        outcomes = {i: _str(v) for i, v in enumerate(got[len(KINDS) + 1 :: 2])}
        checkpoints = got[len(KINDS) + 2 :: 2]
        if not sentinel:
            return Tally(present, dict(present), outcomes, ["the loss sentinel is gone"], tallied=False)
        expected = {k: tallies.get(f"added:{k}", 0) - tallies.get(f"removed:{k}", 0) for k in KINDS}
        tally = Tally(present, expected, outcomes)
        for kind, n in tally.missing.items():
            tally.problems.append(
                f"{kind}: {present[kind]:,} of the {expected[kind]:,} staged and uncommitted records "
                f"are left ({n:,} missing)"
            )
        gone = [i for i, c in enumerate(checkpoints) if c[0] is None and outcomes[i] == "done"]
        if gone:
            shown = ", ".join(str(i) for i in gone[:10]) + (", ..." if len(gone) > 10 else "")
            tally.problems.append(f"the checkpoint of {len(gone)} finished batch(es) is gone: {shown}")
        # The checkpoints' counts add up to the sentinel's, unless a checkpoint (of a batch not
        # finished too) or the sentinel itself was lost and written again.
        summed = {k: sum(int(c[j] or 0) for c in checkpoints) for j, k in enumerate(KINDS)}
        unequal = {k: (summed[k], tallies.get(f"added:{k}", 0)) for k in KINDS}
        unequal = {k: v for k, v in unequal.items() if v[0] != v[1]}
        if unequal and not gone:
            tally.problems.append(
                "the batches' checkpoints and the run's tally disagree on what was staged ("
                + ", ".join(f"{k}: {a:,} against {b:,}" for k, (a, b) in unequal.items())
                + "): a checkpoint or the sentinel was lost"
            )
        if not tally.missing:
            for kind in KINDS:
                if present[kind] > expected[kind]:  # written around the step script: not a loss
                    log.warning(
                        "staged %s holds %d fields, %d more than the steps counted",
                        kind,
                        present[kind],
                        present[kind] - expected[kind],
                    )
        return tally

    def count(self, kind: str) -> int:
        return int(self.redis.hlen(self.key(kind)))

    def drop(self) -> None:
        """Remove the whole namespace (after a complete commit)."""
        keys = list(self.redis.scan_iter(match=self.ns + "*", count=1000))
        if keys:
            self.redis.delete(*keys)


class ReadAhead(Generic[T]):
    """Iterate ``items`` in a thread, up to ``depth`` items ahead of the consumer.

    The commit reads the next chunks from Redis (Python work, GIL held) while earlier ones are
    in Postgres (the driver waits with the GIL released), so the two overlap; reading starts
    at once, so the first chunks are ready when Postgres is. Memory stays bounded by
    ``depth`` + 1 items. An error in the reader is raised in the consumer; ``close()`` (or
    leaving the ``with`` block) stops the reader.
    """

    _DONE = object()

    def __init__(self, items: Iterator[T], depth: int = 1) -> None:
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="staging-read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[BaseException | None, object]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for item in self._items:
                if not self._put((None, item)):
                    return
            self._put((None, self._DONE))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((exc, None))

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        if self._stop.is_set():
            raise StopIteration
        exc, item = self._queue.get()
        if exc is not None:
            self.close()
            raise exc
        if item is self._DONE:
            self.close()
            raise StopIteration
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
