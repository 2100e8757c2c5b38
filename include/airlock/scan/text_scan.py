"""Text files: JSON configs (auto_map, chat templates, notebooks), scripts and Jinja templates.

JSON is parsed fully up to a size cap; that is where a Hugging Face repo says to import code
from itself (``auto_map``) and where its chat template lives. Other text is data.
"""

from __future__ import annotations

import json
from typing import Any

from airlock.scan.context import Blob, ScanContext
from airlock.scan.detect import TEXT_SNIFF_BYTES, is_text
from airlock.scan.template_scan import check_template

# Larger text is not parsed: it is "text", so a larger file named .json fails its name's claim
# (format.mismatch) instead of passing unchecked. Real tokenizer.json files stay well below.
MAX_PARSED_TEXT = 256 << 20
# Keys that make transformers/diffusers import code shipped in the repo.
REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")


def scan_text(ctx: ScanContext, blob: Blob) -> str:
    if blob.size > MAX_PARSED_TEXT:
        return "text"
    blob.prefetch()
    data = blob.tobytes()
    if blob.size > TEXT_SNIFF_BYTES and not is_text(data):  # the sniffer checked the first TEXT_SNIFF_BYTES
        ctx.hit("format.unknown", f"{ctx.where(blob)}: starts as text but is not UTF-8 text throughout", blob)
        return "unknown"
    text = data.decode("utf-8", "replace").lstrip("\ufeff")
    if text.startswith("#!"):
        return "script"
    if blob.suffix == ".jinja":
        check_template(ctx, blob, text, "chat template")
    if text.lstrip()[:1] in ("{", "["):
        duplicates: list[str] = []
        try:  # json.loads as transformers reads it (last value wins), noting keys given twice
            value = json.loads(text, object_pairs_hook=lambda pairs: _last_wins(pairs, duplicates))
        except (json.JSONDecodeError, RecursionError):
            return "text"
        if duplicates:
            # Python's json keeps the last value, other parsers the first or refuse the file: two
            # readings of one config (a harmless chat_template for the scanner, another for a loader).
            names = ", ".join(repr(k) for k in dict.fromkeys(duplicates))
            ctx.hit("json.duplicate_key", f"{ctx.where(blob)}: keys given twice with different values: {names}", blob)
        return _scan_json(ctx, blob, value)
    return "text"


def _last_wins(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out and out[key] != value and len(duplicates) < 8:
            duplicates.append(key)
        out[key] = value
    return out


def _scan_json(ctx: ScanContext, blob: Blob, value: Any) -> str:
    if not isinstance(value, dict):
        return "json"
    if "cells" in value and "nbformat" in value:
        return "notebook"
    where = ctx.where(blob)
    for key in REMOTE_CODE_KEYS:
        if value.get(key):
            targets = _targets(value[key])
            ctx.hit("remote_code.auto_map", f"{where}: {key} loads code from the repo: {', '.join(targets[:8])}", blob)
    template = value.get("chat_template")
    if isinstance(template, str):
        check_template(ctx, blob, template, "chat_template")
    elif isinstance(template, list):  # [{name, template}]: transformers turns it into a dict
        for item in template:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                check_template(ctx, blob, item["template"], f"chat_template {item.get('name')!r}")
    elif isinstance(template, dict):  # {name: template}: transformers keeps it as it is
        for name, item in template.items():
            if isinstance(item, str):
                check_template(ctx, blob, item, f"chat_template {name!r}")
    return "json"


def _targets(mapping: Any) -> list[str]:
    if isinstance(mapping, dict):
        return [f"{k} -> {v}" for k, v in mapping.items()]
    if isinstance(mapping, list):
        return [str(v) for v in mapping]
    return [str(mapping)]
