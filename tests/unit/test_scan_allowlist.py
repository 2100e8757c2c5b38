"""The pickle allowlist equals what torch 2.13 / numpy / joblib emit (bench/derive_pickle_allowlist.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from airlock.scan.allowlist import ALLOWED_GLOBALS, Role

BENCH = Path(__file__).resolve().parents[2] / "bench"
# The only entries a numpy-2 environment cannot derive: numpy 1.x spellings in older checkpoints.
OLDER_WRITERS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
}


def _derive():
    spec = importlib.util.spec_from_file_location("derive_pickle_allowlist", BENCH / "derive_pickle_allowlist.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["derive_pickle_allowlist"] = module
    spec.loader.exec_module(module)
    return module.derive(quick=True)


def test_allowlist_is_exactly_what_real_checkpoints_emit() -> None:
    emitted = _derive()
    assert set(emitted) - set(ALLOWED_GLOBALS) == set(), "torch/numpy emit a global the allowlist lacks"
    assert set(ALLOWED_GLOBALS) - set(emitted) == OLDER_WRITERS, "allowlisted but never emitted"
    called_but_ref = {g for g, called in emitted.items() if called and ALLOWED_GLOBALS[g] is Role.REF}
    assert not called_but_ref
