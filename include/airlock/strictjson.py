"""JSON with one reading only: a signed or verified document whose object repeats a key is refused.

Readers disagree on which of two equal keys wins (Python keeps the last, others the first), so a document that
repeats a key can say one thing to Airlock and another to the next tool. Used wherever Airlock believes a JSON
document because of a signature or a digest (index events, checkpoints, AI-BOMs).
"""

from __future__ import annotations

import json
from typing import Any


def refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: a ValueError naming the first repeated key."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"key {key!r} appears twice in one object")
        seen.add(key)
    return dict(pairs)


def loads(data: str | bytes) -> Any:
    """:func:`json.loads`, refusing repeated keys (ValueError, like any other malformed JSON)."""
    return json.loads(data, object_pairs_hook=refuse_duplicate_keys)
