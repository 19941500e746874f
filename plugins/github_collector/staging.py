"""Per-run staging area in Redis: records, checkpoints and the plan.

Every DAG run has its own namespace, derived from (dag_id, run_id), so retries and re-runs of
that run find their checkpoints, and overlapping runs (a daily run and a backfill) never see
each other's keys. Under ``{prefix}run:{id}:``:

- ``plan``                   the run's plan (JSON)
- ``batch:{i}:state``        a batch's checkpoint (collector.BatchState, zlib-compressed JSON)
- ``batch:{i}:outcome``      done | failed: <reason>
- ``next_batch``             how many batches fetch slots have claimed so far (a counter)
- ``slot:{s}:claimed``       the batches slot ``s`` claimed, in order; a retried or resumed
                             slot finishes these before it claims more
- ``users``                  user_id -> record (full profiles overwrite list-only records)
- ``links``                  "repo_id:user_id:relation" -> record
- ``repos``                  requested name -> repo record
- ``stats``                  counters: pages, quota spent, records staged
- ``lost_sentinel``          written with the plan; if it is gone, Redis lost this run's data

A step's records and its checkpoint go in one Lua script (atomic, one round trip): either both
are stored or neither, so a crash can only lose the step in flight, never mis-state what was
staged.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import zlib
from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from github_collector.collector import Step

STAGE_TTL_S = 14 * 86_400  # staged data outlives a long outage, but not forever
KINDS = ("repos", "users", "links")  # commit order: links refer to repos and users


def run_namespace(prefix: str, dag_id: str, run_id: str) -> str:
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()[:20]
    return f"{prefix}run:{digest}:"


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
_WRITE_STEP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ttl = ARGV[1]
local i = 10
local function put(key, pairs, nx)
  local last = i + 2 * pairs - 1
  if nx then
    for j = i, last, 2 do redis.call('HSETNX', key, ARGV[j], ARGV[j + 1]) end
  else
    local j = i
    while j <= last do  -- in slices: unpack is bounded by Lua's C stack
      local k = math.min(j + 999, last)
      redis.call('HSET', key, unpack(ARGV, j, k))
      j = k + 1
    end
  end
  i = last + 1
end
put(KEYS[2], tonumber(ARGV[6]), true)
put(KEYS[2], tonumber(ARGV[7]), false)
put(KEYS[3], tonumber(ARGV[8]), false)
put(KEYS[4], tonumber(ARGV[9]), false)
redis.call('SET', KEYS[5], ARGV[2], 'EX', ttl)
redis.call('HINCRBY', KEYS[6], 'pages', ARGV[3])
if tonumber(ARGV[4]) ~= 0 then redis.call('HINCRBY', KEYS[6], 'cost_core', ARGV[4]) end
if tonumber(ARGV[5]) ~= 0 then redis.call('HINCRBY', KEYS[6], 'cost_graphql', ARGV[5]) end
for k = 2, 4 do redis.call('EXPIRE', KEYS[k], ttl) end
redis.call('EXPIRE', KEYS[6], ttl)
return 1
"""


class Staging:
    def __init__(self, redis, namespace: str) -> None:
        self.redis = redis
        self.ns = namespace
        self._write = redis.register_script(_WRITE_STEP)

    def key(self, *parts: Any) -> str:
        return self.ns + ":".join(str(p) for p in parts)

    # -- plan -------------------------------------------------------------------------------------
    def save_plan(self, plan: dict) -> None:
        pipe = self.redis.pipeline()
        pipe.set(self.key("plan"), json.dumps(plan), ex=STAGE_TTL_S)
        pipe.set(self.key("lost_sentinel"), "1", ex=STAGE_TTL_S)
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
        raw = self.redis.get(self.key("batch", batch, "state"))
        if not raw:
            return None
        # zlib-compressed JSON; plain JSON (a checkpoint written before compression) reads too.
        return json.loads(raw if isinstance(raw, str) or raw[:1] == b"{" else zlib.decompress(raw))

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
            (full if u.get("profile_complete") else items).extend((str(u["user_id"]), json.dumps(u)))
        links = [
            v
            for lk in step.links
            for v in (f"{lk['repo_id']}:{lk['user_id']}:{lk['relation']}", json.dumps(lk))
        ]
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
        if fields:
            self.redis.hdel(self.key(kind), *fields)

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
