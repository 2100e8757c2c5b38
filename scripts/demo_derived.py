#!/usr/bin/env python3
"""Build the demo's derived model, ``demo/tiny-gpt2-fp16``, from ``demo/tiny-gpt2``, deterministically.

The weights are tiny-gpt2's cast to float16 (``tensor.to(torch.float16)``) and
saved with safetensors; ``config.json`` says ``dtype: float16``; the
tokenizer and generation config are copied byte for byte; the model card names
the base model. Alongside the model directory the script writes the derivation
record (``airlock.derivation/v1``, see :class:`airlock.aibom.DerivationRecord`)
that ingesting the fp16 model takes: the parent (``demo/tiny-gpt2`` by its root
digest, and its registry version when given) and the conversion step with the
exact tool versions and parameters.

Same inputs, same bytes: safetensors writes tensors in a fixed order with no
timestamps, the cast is exact IEEE rounding, and JSON is written with sorted keys.

Usage::

    python scripts/demo_derived.py --parent DIR/demo/tiny-gpt2 --out DIR [--parent-version V]

or ``build_fp16(parent_dir, out_dir) -> (model_dir, derivation_record)``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

PARENT = "demo/tiny-gpt2"
TINY_GPT2_FP16 = "demo/tiny-gpt2-fp16"
DERIVATION_SUFFIX = ".derivation.json"
# Copied verbatim from the parent: everything but the weights, the config and the card.
_COPIED = ("generation_config.json", "tokenizer.json", "tokenizer_config.json")

CARD = f"""---
license: apache-2.0
pipeline_tag: text-generation
library_name: transformers
base_model: {PARENT}
language:
- en
tags:
- gpt2
- airlock-demo
- random-weights
- fp16
---

# {TINY_GPT2_FP16}

[`{PARENT}`](../tiny-gpt2) with every floating-point tensor cast to float16
(`tensor.to(torch.float16)`), saved as `model.safetensors`. Nothing else changed:
same tokenizer, same architecture. Made by `scripts/demo_derived.py`; its
derivation record names the parent by digest and the conversion step by tool
and exact version.

Intended use: tests and demos of supply-chain controls. Not for any real task.
"""


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Stable JSON (sorted keys, 2-space indent, trailing newline), as scripts/demo_models.py writes it."""
    path.write_bytes((json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _parent_root_digest(parent_dir: Path) -> str:
    """A model directory's model_signing root digest: what the registry holds for it."""
    from airlock.manifest import manifest_for_directory

    return manifest_for_directory(parent_dir).root_digest


def cast_weights(parent_dir: Path, target: Path) -> dict[str, str]:
    """Cast the parent's floating-point tensors to float16; returns the exact tools used."""
    import safetensors
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(parent_dir / "model.safetensors"))
    cast = {name: (t.to(torch.float16) if t.is_floating_point() else t).contiguous()
            for name, t in sorted(tensors.items())}
    save_file(cast, str(target / "model.safetensors"), metadata={"format": "pt"})
    return {"torch": torch.__version__, "safetensors": safetensors.__version__}


def build_fp16(parent_dir: Path, out_dir: Path, *, parent_version: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Write ``out_dir/demo/tiny-gpt2-fp16`` and its derivation record; return (model dir, record dict).

    The record is also written beside the model directory as
    ``tiny-gpt2-fp16.derivation.json`` (not inside it: it is not a model file).
    ``parent_version`` is the parent's registry version when known; without it
    ingestion finds the parent in the registry by its root digest.
    """
    parent_dir = Path(parent_dir)
    target = Path(out_dir) / TINY_GPT2_FP16
    if target.exists():
        shutil.rmtree(target)  # a rebuild never keeps stale files
    target.mkdir(parents=True)
    tools = cast_weights(parent_dir, target)
    config = json.loads((parent_dir / "config.json").read_text())
    # transformers 5 writes the weights' dtype as "dtype" (4.x: "torch_dtype"); set whichever the parent uses.
    dtype_key = "torch_dtype" if "torch_dtype" in config and "dtype" not in config else "dtype"
    _write_json(target / "config.json", {**config, dtype_key: "float16"})
    for name in _COPIED:
        shutil.copyfile(parent_dir / name, target / name)
    (target / "README.md").write_bytes(CARD.encode("utf-8"))
    # The claim names its output by digest: ingestion refuses a record whose last step did not produce the model
    # being ingested (so a record cannot be attached to some other model to borrow this parent).
    record = derivation_record(_parent_root_digest(parent_dir), tools, parent_version,
                               output_root_digest=_parent_root_digest(target))
    _write_json(target.with_name(target.name + DERIVATION_SUFFIX), record)
    return target, record


def derivation_record(parent_root_digest: str, tools: dict[str, str], parent_version: str | None,
                      output_root_digest: str | None = None) -> dict[str, Any]:
    """The ``airlock.derivation/v1`` record for the fp16 cast (validated against the schema before it is returned)."""
    from airlock.aibom import DerivationRecord

    parent: dict[str, Any] = {"model": PARENT, "root_digest": parent_root_digest}
    if parent_version is not None:
        parent["version"] = parent_version
    record = {
        "schema": "airlock.derivation/v1",
        "parent": parent,
        "steps": [{
            "kind": "conversion",
            "method": "dtype-cast",
            "tool": "torch",
            "tool_version": tools["torch"],
            "parameters": {"from_dtype": "float32", "to_dtype": "float16", "call": "tensor.to(torch.float16)",
                           "writer": f"safetensors {tools['safetensors']}", "tensors": "floating-point only"},
            "run_by": "scripts/demo_derived.py",
            "description": "cast every floating-point tensor of the parent to float16",
        }],
    }
    if output_root_digest is not None:
        record["steps"][-1]["output_root_digest"] = output_root_digest
    return DerivationRecord.load(record).to_json_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parent", type=Path, required=True, help=f"the {PARENT} directory")
    parser.add_argument("--out", type=Path, required=True, help=f"writes OUT/{TINY_GPT2_FP16}")
    parser.add_argument("--parent-version", help=f"{PARENT}'s registry version, when known")
    args = parser.parse_args(argv)
    model_dir, record = build_fp16(args.parent, args.out, parent_version=args.parent_version)
    print(f"{TINY_GPT2_FP16} -> {model_dir}")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
