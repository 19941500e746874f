"""Opaque identifiers in GitHub's formats: node ids, connection cursors, timestamps."""

from __future__ import annotations

import base64
import binascii
import json
import struct
from datetime import UTC, datetime

# GitHub's "next" node ids are "<prefix>_" + base64(msgpack([0, database_id])) without padding;
# msgpack encodes a uint32 as 0xce + 4 bytes, which is where the familiar "kgDO" comes from.
NODE_PREFIXES = {
    "User": "U",
    "Organization": "O",
    "Bot": "BOT",
    "Repository": "R",
    "Mannequin": "M",
    "Issue": "I",
    "PullRequest": "PR",
    "Discussion": "D",
}
_PREFIX_TYPES = {v: k for k, v in NODE_PREFIXES.items()}


def node_id(typename: str, database_id: int) -> str:
    packed = b"\x92\x00\xce" + struct.pack(">I", database_id)
    return NODE_PREFIXES[typename] + "_" + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def decode_node_id(value: str) -> tuple[str, int] | None:
    """Return (typename, database_id) or None when the id is not one the emulator could have issued."""
    prefix, sep, rest = value.partition("_")
    if not sep or prefix not in _PREFIX_TYPES:
        return None
    try:
        raw = base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 7 or raw[:3] != b"\x92\x00\xce":
        return None
    return _PREFIX_TYPES[prefix], struct.unpack(">I", raw[3:])[0]


# Cursors carry the sort key of the item they point at (never an offset), so a page boundary
# stays put when items are inserted elsewhere in the list.
_CURSOR_PREFIX = b"cursor:v2:"


def encode_cursor(key: tuple) -> str:
    return base64.b64encode(_CURSOR_PREFIX + json.dumps(list(key), separators=(",", ":")).encode()).decode()


def decode_cursor(value: str) -> tuple | None:
    try:
        raw = base64.b64decode(value.encode(), validate=True)
        if not raw.startswith(_CURSOR_PREFIX):
            return None
        key = json.loads(raw[len(_CURSOR_PREFIX) :])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(key, list) or not all(isinstance(k, int | str) for k in key):
        return None
    return tuple(key)


def iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> int:
    return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def to_base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def from_base36(s: str) -> int | None:
    if not s or not s.isalnum() or not s.isascii():
        return None
    try:
        return int(s, 36)
    except ValueError:
        return None
