"""ETag cache in Redis, so a revalidation that GitHub answers with 304 costs no quota.

GitHub's ETags depend on the token, so each entry records which token (by fingerprint)
it belongs to; the client then prefers that token for the revalidation. The body is kept
(compressed) because a 304 carries none and the caller still needs it.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

DEFAULT_TTL_S = 14 * 86_400


def _text(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


@dataclass(frozen=True)
class CachedResponse:
    fingerprint: str
    etag: str
    body: Any
    link: str | None


class EtagCache:
    def __init__(self, redis, prefix: str = "ghc:", ttl_s: int = DEFAULT_TTL_S) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _key(self, url: str) -> str:
        return f"{self.prefix}etag:{hashlib.sha256(url.encode()).hexdigest()}"

    def get(self, url: str) -> CachedResponse | None:
        raw = self.redis.hmget(self._key(url), "fp", "etag", "body", "link")
        if not raw[1] or raw[2] is None:
            return None
        return CachedResponse(
            fingerprint=_text(raw[0]),
            etag=_text(raw[1]),
            body=json.loads(zlib.decompress(raw[2])),
            link=_text(raw[3]) or None,
        )

    def put(self, url: str, fp: str, etag: str, body: Any, link: str | None) -> None:
        key = self._key(url)
        pipe = self.redis.pipeline()
        pipe.hset(
            key,
            mapping={
                "fp": fp,
                "etag": etag,
                "body": zlib.compress(json.dumps(body).encode(), 3),
                "link": link or "",
            },
        )
        pipe.expire(key, self.ttl_s)
        pipe.execute()
