"""The canonical inputs a fingerprint is computed on, shipped with the library and versioned.

A prompt set is a JSONL file (``{"id", "text"}`` per line) plus a broad text (JSON) whose token ids are
compared exactly (it exercises the tokenizer far more than the prompts do: every printable ASCII
character, numbers, whitespace runs, code, many scripts, emoji, combining marks). The sha256 of both
files goes into every fingerprint; two fingerprints are comparable only when they agree.

A new version is a new pair of files (``prompts-v2.jsonl`` ...), never an edit: baselines made with
v1 must stay checkable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import ConfigurationError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_PROMPT_SET = "airlock-canonical-v1"
_FILES = {"airlock-canonical-v1": ("prompts-v1.jsonl", "tokenizer-text-v1.json")}


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


@dataclass(frozen=True)
class PromptSet:
    id: str
    prompts: tuple[Prompt, ...]
    text: str  # the broad tokenizer text
    sha256: str  # of the prompts JSONL bytes
    text_sha256: str  # of the tokenizer text bytes


def load_prompt_set(prompt_set_id: str = DEFAULT_PROMPT_SET) -> PromptSet:
    """Read and check a shipped prompt set (unique non-empty ids, non-empty texts)."""
    if prompt_set_id not in _FILES:
        raise ConfigurationError(f"unknown fingerprint prompt set {prompt_set_id!r} (known: {sorted(_FILES)})")
    prompts_name, text_name = _FILES[prompt_set_id]
    raw = (DATA_DIR / prompts_name).read_bytes()
    text_raw = (DATA_DIR / text_name).read_bytes()
    prompts: list[Prompt] = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        item = json.loads(line)
        if not isinstance(item, dict) or not item.get("id") or not isinstance(item.get("text"), str) \
                or not item["text"]:
            raise ConfigurationError(f"{prompts_name} line {number}: expected {{'id': ..., 'text': ...}}")
        prompts.append(Prompt(id=str(item["id"]), text=item["text"]))
    if len({p.id for p in prompts}) != len(prompts):
        raise ConfigurationError(f"{prompts_name}: prompt ids are not unique")
    # The broad text is a JSON string so its control characters ("\r\n", form feed, vertical tab: part of
    # what is tokenised) are escapes in an ASCII-clean file that no checkout can rewrite.
    text = json.loads(text_raw.decode("utf-8")).get("text")
    if not isinstance(text, str) or not text:
        raise ConfigurationError(f"{text_name}: expected {{'text': ...}}")
    return PromptSet(
        id=prompt_set_id,
        prompts=tuple(prompts),
        text=text,
        sha256=hashlib.sha256(raw).hexdigest(),
        text_sha256=hashlib.sha256(text_raw).hexdigest(),
    )
