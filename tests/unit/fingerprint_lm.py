"""A tiny causal LM built in a temporary directory for the evaluate/fingerprint tests (no download).

The tokenizer is the demo models' byte-level BPE trained on ``scripts/demo_data/corpus.txt``. Weights
are random but drawn with a larger spread (``initializer_range=0.2``) than GPT-2's 0.02, so that the
next-token distributions are peaked the way a trained model's are; with near-uniform outputs a
1e-5 relative change of one matrix moves log-probabilities by less than the absolute minimum
threshold (1e-5), which would test nothing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _demo_models():
    spec = importlib.util.spec_from_file_location("airlock_demo_models_for_tests", SCRIPTS / "demo_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_tiny_lm(target: Path, *, seed: int = 0, initializer_range: float = 0.2) -> Path:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    demo = _demo_models()
    target.mkdir(parents=True, exist_ok=True)
    demo._train_tokenizer(demo.CORPUS, target)
    eos = AutoTokenizer.from_pretrained(str(target)).eos_token_id
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=demo.VOCAB_SIZE, n_positions=demo.CONTEXT_LENGTH, n_embd=64, n_layer=2,
                        n_head=2, initializer_range=initializer_range, bos_token_id=eos, eos_token_id=eos)
    GPT2LMHeadModel(config).eval().save_pretrained(str(target))
    return target


def perturbed_copy(source: Path, target: Path, *, tensor: str, relative_sigma: float, seed: int = 1) -> Path:
    """A copy of ``source`` with Gaussian noise of ``relative_sigma`` x the tensor's std added to one tensor."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = load_file(str(source / "model.safetensors"))
    w = weights[tensor]
    generator = torch.Generator().manual_seed(seed)
    weights[tensor] = w + torch.randn(w.shape, generator=generator) * w.std() * relative_sigma
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


def remapped_tokenizer_copy(source: Path, target: Path, first: str, second: str) -> Path:
    """A copy whose tokenizer.json swaps the ids of two vocabulary entries (weights untouched)."""
    shutil.copytree(source, target)
    path = target / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return target
