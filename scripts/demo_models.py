#!/usr/bin/env python3
"""Build Airlock's demo model repositories, deterministically and offline.

The demo hub (``scripts/demo_hub.py``) publishes these directories as git+LFS
repositories, and Airlock's pipeline ingests them end to end. Every byte is
generated here -- nothing is downloaded -- and every run produces byte-identical
files, so the hub's commit shas (and therefore the revisions that tests and the
demo pin) are stable.

Models (repo id -> what it exercises):

``demo/tiny-gpt2``
    Random-weight 2-layer GPT-2 in ``model.safetensors`` with a byte-level BPE
    tokenizer trained in-process on ``demo_data/corpus.txt``. Loads with
    ``AutoTokenizer``/``AutoModelForCausalLM`` and generates on CPU in seconds.
    The happy path: should be allowed and promoted.
``demo/tiny-gpt2-bin``
    The same weights as a benign ``pytorch_model.bin`` (torch zip + pickle).
    Exercises the pickle allowlist: only tensor-rebuilding globals.
``demo/evil-pickle``
    A ``pytorch_model.bin`` in torch's zip layout whose ``data.pkl`` calls
    ``os.system("touch /tmp/airlock-evil-pickle-was-loaded")`` if unpickled. The
    payload is deliberately harmless (it only creates that marker file) so a test
    can prove the pipeline never loads it. The bytes are written by hand; this
    module never unpickles them.
``demo/remote-code``
    Safetensors weights plus a ``config.json`` whose ``auto_map`` points at
    ``modeling_tiny.py``/``configuration_tiny.py`` in the repo, i.e. a model that
    needs ``trust_remote_code=True``. The Python is harmless, but the policy must
    flag it.

Determinism: weights come from ``random.Random`` seeded per tensor (not from
torch's RNG, whose vectorised normal sampling can differ between CPU
instruction sets), the tokenizer trainer is deterministic for a fixed corpus,
and the torch zip writer stores no timestamps. ``config.json`` records the
transformers version, so the bytes are stable for a given pinned environment.

Usage::

    python scripts/demo_models.py --out DIR     # prints repo id -> directory

or, as a module: ``build_all(Path(DIR)) -> {repo_id: directory}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay inside the builders so importing this module is cheap
    import torch

TINY_GPT2 = "demo/tiny-gpt2"
TINY_GPT2_BIN = "demo/tiny-gpt2-bin"
EVIL_PICKLE = "demo/evil-pickle"
REMOTE_CODE = "demo/remote-code"
REPO_IDS: tuple[str, ...] = (TINY_GPT2, TINY_GPT2_BIN, EVIL_PICKLE, REMOTE_CODE)

SEED = 20240601
CORPUS = Path(__file__).resolve().parent / "demo_data" / "corpus.txt"
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 512
CONTEXT_LENGTH = 128
INIT_STD = 0.02

EVIL_MARKER = "/tmp/airlock-evil-pickle-was-loaded"
EVIL_COMMAND = f"touch {EVIL_MARKER}"

# Fixed zip metadata so hand-written archives are byte-stable (1980-01-01 is the zip epoch).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------- helpers


def _write_text(path: Path, text: str) -> None:
    """Write UTF-8 with LF endings regardless of platform, so hashes never depend on the OS."""
    path.write_bytes(text.encode("utf-8"))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Stable JSON: sorted keys, 2-space indent, trailing newline."""
    _write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _fresh_dir(out_dir: Path, repo_id: str) -> Path:
    """Return an empty directory for ``repo_id`` so stale files from older builds never leak in."""
    target = out_dir / repo_id
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    return target


def _model_card(front_matter: str, body: str) -> str:
    """Hugging Face model card: YAML front matter between ``---`` lines, then Markdown."""
    return f"---\n{front_matter.strip()}\n---\n\n{body.strip()}\n"


def _uniform_values(name: str, count: int, bound: float) -> list[float]:
    """``count`` floats uniform in [-bound, bound], seeded by ``SEED`` and the tensor name.

    Python's ``random`` is used instead of ``torch.normal_`` because its output is
    specified bit-for-bit across platforms; torch's vectorised samplers may differ
    in the last ulp between AVX2 and AVX-512 builds, which would change the
    commit shas of the demo hub from one machine to another.
    """
    digest = hashlib.sha256(f"{SEED}:{name}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return [(2.0 * rng.random() - 1.0) * bound for _ in range(count)]


def _deterministic_tensor(name: str, shape: tuple[int, ...], std: float = INIT_STD) -> torch.Tensor:
    """A float32 tensor with standard deviation ``std`` (uniform: bound = std * sqrt(3))."""
    import torch

    count = 1
    for dim in shape:
        count *= dim
    values = _uniform_values(name, count, std * 3.0**0.5)
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


# --------------------------------------------------------------------------- demo/tiny-gpt2


def _train_tokenizer(corpus: Path, save_dir: Path) -> None:
    """Train a byte-level BPE on the shipped corpus and save it the way ``AutoTokenizer`` expects.

    The raw ``vocab.json``/``merges.txt`` go through a scratch directory so the
    repo holds only the files ``GPT2TokenizerFast.save_pretrained`` writes
    (``tokenizer.json`` + ``tokenizer_config.json``), exactly like a Hub upload.
    """
    from tokenizers import ByteLevelBPETokenizer

    # transformers 5 makes GPT2TokenizerFast a runtime alias of the tokenizers-backed GPT2Tokenizer.
    from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [corpus.read_text(encoding="utf-8")],
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        show_progress=False,
    )
    with tempfile.TemporaryDirectory(prefix="airlock-bpe-") as scratch:
        vocab_file, merges_file = bpe.save_model(scratch)
        tokenizer = GPT2TokenizerFast(
            vocab=vocab_file,
            merges=merges_file,
            model_max_length=CONTEXT_LENGTH,
        )
    tokenizer.save_pretrained(str(save_dir))


def _tiny_gpt2_model(eos_token_id: int) -> Any:
    """A 2-layer GPT-2 whose every parameter is set from ``_deterministic_tensor``.

    Matrices get small uniform noise; 1-D parameters are LayerNorm scales (ones)
    or biases (zeros), as GPT-2's own init would set them. Tied weights
    (``lm_head`` = ``wte``) appear once in ``named_parameters`` and stay tied.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=CONTEXT_LENGTH,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.copy_(_deterministic_tensor(name, tuple(param.shape)))
            elif name.endswith(".weight"):
                param.fill_(1.0)
            else:
                param.zero_()
    return model.eval()


TINY_GPT2_CARD = _model_card(
    """
license: apache-2.0
pipeline_tag: text-generation
library_name: transformers
language:
- en
tags:
- gpt2
- airlock-demo
- random-weights
""",
    f"""
# {TINY_GPT2}

A deliberately tiny GPT-2 (2 layers, 2 heads, 64-dim embeddings, {CONTEXT_LENGTH}-token
context, {VOCAB_SIZE}-token byte-level BPE vocabulary) used to demonstrate Airlock's
model ingestion pipeline. Its weights are **random**; its output is gibberish.

- Weights: `model.safetensors` (no pickle).
- Tokenizer: byte-level BPE trained on a few kilobytes of original English prose.
- Built deterministically by `scripts/demo_models.py`; no data was downloaded.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{TINY_GPT2}")
model = AutoModelForCausalLM.from_pretrained("{TINY_GPT2}")
ids = tokenizer("The keeper of the light", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=5)[0]))
```

Intended use: tests and demos of supply-chain controls. Not for any real task.
""",
)


def build_tiny_gpt2(out_dir: Path) -> Path:
    """Write ``demo/tiny-gpt2``: safetensors weights, configs, tokenizer, model card."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    target = _fresh_dir(out_dir, TINY_GPT2)
    _train_tokenizer(CORPUS, target)
    eos_token_id = AutoTokenizer.from_pretrained(str(target)).eos_token_id
    _tiny_gpt2_model(eos_token_id).save_pretrained(str(target))
    _write_text(target / "README.md", TINY_GPT2_CARD)
    return target


# --------------------------------------------------------------------------- demo/tiny-gpt2-bin

TINY_GPT2_BIN_CARD = _model_card(
    """
license: apache-2.0
pipeline_tag: text-generation
library_name: transformers
language:
- en
tags:
- gpt2
- airlock-demo
- random-weights
- pickle
""",
    f"""
# {TINY_GPT2_BIN}

The weights of [`{TINY_GPT2}`](../tiny-gpt2) saved with `torch.save` as
`pytorch_model.bin` (torch's zip format, with a pickle inside). The pickle only
rebuilds tensors, so an allowlisting scanner should accept it and
`torch.load(..., weights_only=True)` loads it.

Intended use: tests and demos of supply-chain controls. Not for any real task.
""",
)

# Files shared verbatim with demo/tiny-gpt2 (everything except the weights and the card).
_TINY_GPT2_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def build_tiny_gpt2_bin(out_dir: Path, tiny_gpt2_dir: Path) -> Path:
    """Write ``demo/tiny-gpt2-bin`` from the safetensors of ``demo/tiny-gpt2`` (same keys, same values)."""
    import torch
    from safetensors.torch import load_file

    target = _fresh_dir(out_dir, TINY_GPT2_BIN)
    for name in _TINY_GPT2_SIDE_FILES:
        shutil.copyfile(tiny_gpt2_dir / name, target / name)
    state_dict = load_file(str(tiny_gpt2_dir / "model.safetensors"))
    torch.save(state_dict, target / "pytorch_model.bin")
    _write_text(target / "README.md", TINY_GPT2_BIN_CARD)
    return target


# --------------------------------------------------------------------------- demo/evil-pickle


def _binunicode(text: str) -> bytes:
    """Pickle BINUNICODE opcode: ``X`` + little-endian uint32 length + UTF-8 bytes."""
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def evil_pickle_bytes(command: str = EVIL_COMMAND) -> bytes:
    """Hand-assembled protocol-2 pickle equivalent to ``{"__airlock_demo__": os.system(command)}``.

    Written opcode by opcode (never via ``pickle.dumps`` of a ``__reduce__``
    class) so building it needs no code that could run it, and so the bytes are
    exactly what a malicious upload looks like: a ``GLOBAL os system`` followed
    by ``REDUCE``.
    """
    return b"".join(
        (
            b"\x80\x02",  # PROTO 2
            b"}",  # EMPTY_DICT
            _binunicode("__airlock_demo__"),  # key
            b"cos\nsystem\n",  # GLOBAL os.system
            _binunicode(command),  # argument
            b"\x85",  # TUPLE1
            b"R",  # REDUCE -> os.system(command)
            b"s",  # SETITEM
            b".",  # STOP
        )
    )


def _zip_entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Add a stored (uncompressed) member with fixed metadata, as torch's writer does."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 0
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def write_torch_zip(path: Path, pickle_bytes: bytes) -> None:
    """Write ``pickle_bytes`` as ``data.pkl`` in torch's zip checkpoint layout (no tensor storages).

    The archive prefix is the file stem, like ``torch.save`` uses, so the file
    is indistinguishable in shape from a real ``pytorch_model.bin``.
    """
    prefix = path.stem
    with zipfile.ZipFile(path, "w") as archive:
        _zip_entry(archive, f"{prefix}/data.pkl", pickle_bytes)
        _zip_entry(archive, f"{prefix}/byteorder", b"little")
        _zip_entry(archive, f"{prefix}/version", b"3\n")


EVIL_PICKLE_CARD = _model_card(
    """
license: apache-2.0
library_name: transformers
tags:
- airlock-demo
- malicious-demo
- pickle
""",
    f"""
# {EVIL_PICKLE}

**Do not load this model.** `pytorch_model.bin` is a torch zip checkpoint whose
pickle calls `os.system("{EVIL_COMMAND}")` when unpickled
(`torch.load(..., weights_only=False)` or `pickle.load`). The payload is
deliberately harmless -- it only creates the marker file `{EVIL_MARKER}` -- so
tests can prove that Airlock blocks the model without ever deserializing it.
""",
)


def build_evil_pickle(out_dir: Path, tiny_gpt2_dir: Path) -> Path:
    """Write ``demo/evil-pickle``: a GPT-2 ``config.json`` next to a malicious ``pytorch_model.bin``."""
    target = _fresh_dir(out_dir, EVIL_PICKLE)
    shutil.copyfile(tiny_gpt2_dir / "config.json", target / "config.json")
    write_torch_zip(target / "pytorch_model.bin", evil_pickle_bytes())
    _write_text(target / "README.md", EVIL_PICKLE_CARD)
    return target


# --------------------------------------------------------------------------- demo/remote-code

REMOTE_MODEL_TYPE = "airlock-tiny"
REMOTE_HIDDEN_SIZE = 32

CONFIGURATION_TINY_PY = '''\
"""Configuration for the Airlock remote-code demo model.

Harmless by design: it only stores two integers. Its presence (with
``auto_map`` in config.json) is what makes loading require
``trust_remote_code=True``, which Airlock's policy must flag.
"""

from transformers import PretrainedConfig


class TinyConfig(PretrainedConfig):
    model_type = "airlock-tiny"

    def __init__(self, vocab_size: int = 512, hidden_size: int = 32, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        super().__init__(**kwargs)
'''

MODELING_TINY_PY = '''\
"""Model code for the Airlock remote-code demo model.

Harmless by design: an embedding, a tanh and a linear head. No I/O, no
subprocesses, no network. It exists so that Airlock's scanner sees a repo that
ships executable Python referenced from config.json's ``auto_map``.
"""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_tiny import TinyConfig


class TinyModel(PreTrainedModel):
    config_class = TinyConfig
    base_model_prefix = "tiny"

    def __init__(self, config: TinyConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor, **kwargs) -> CausalLMOutput:
        return CausalLMOutput(logits=self.head(torch.tanh(self.embed(input_ids))))
'''

REMOTE_CODE_CARD = _model_card(
    """
license: apache-2.0
library_name: transformers
tags:
- airlock-demo
- custom_code
""",
    f"""
# {REMOTE_CODE}

A tiny model whose architecture lives in this repository (`modeling_tiny.py`,
`configuration_tiny.py`) and is wired up through `auto_map` in `config.json`, so
loading it requires `trust_remote_code=True`. The code is harmless; the point is
that Airlock's policy notices executable code shipped with weights.

Intended use: tests and demos of supply-chain controls. Not for any real task.
""",
)


def _remote_code_config() -> dict[str, Any]:
    """``config.json`` as a Hub repo with custom code would carry it."""
    return {
        "architectures": ["TinyModel"],
        "auto_map": {
            "AutoConfig": "configuration_tiny.TinyConfig",
            "AutoModel": "modeling_tiny.TinyModel",
        },
        "dtype": "float32",
        "hidden_size": REMOTE_HIDDEN_SIZE,
        "model_type": REMOTE_MODEL_TYPE,
        "vocab_size": VOCAB_SIZE,
    }


def build_remote_code(out_dir: Path) -> Path:
    """Write ``demo/remote-code``: safetensors weights, ``auto_map`` config, the two Python files."""
    from safetensors.torch import save_file

    target = _fresh_dir(out_dir, REMOTE_CODE)
    weights = {
        "embed.weight": _deterministic_tensor("remote.embed.weight", (VOCAB_SIZE, REMOTE_HIDDEN_SIZE)),
        "head.weight": _deterministic_tensor("remote.head.weight", (VOCAB_SIZE, REMOTE_HIDDEN_SIZE)),
    }
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    _write_json(target / "config.json", _remote_code_config())
    _write_text(target / "configuration_tiny.py", CONFIGURATION_TINY_PY)
    _write_text(target / "modeling_tiny.py", MODELING_TINY_PY)
    _write_text(target / "README.md", REMOTE_CODE_CARD)
    return target


# --------------------------------------------------------------------------- entry points


def build_all(out_dir: Path) -> dict[str, Path]:
    """Build every demo model under ``out_dir/<org>/<name>`` and return ``{repo_id: directory}``.

    Each repo directory is recreated from scratch, so the result depends only on
    this file, the corpus and the pinned libraries.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tiny = build_tiny_gpt2(out_dir)
    return {
        TINY_GPT2: tiny,
        TINY_GPT2_BIN: build_tiny_gpt2_bin(out_dir, tiny),
        EVIL_PICKLE: build_evil_pickle(out_dir, tiny),
        REMOTE_CODE: build_remote_code(out_dir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to build the demo repos into")
    args = parser.parse_args(argv)
    for repo_id, path in build_all(args.out).items():
        print(f"{repo_id} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
