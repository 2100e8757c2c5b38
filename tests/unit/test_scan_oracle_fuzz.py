"""Differential test: the scanner against the loaders themselves (issue 10, section 1).

The oracle (``tests/scan_oracle.py``) runs torch.load, joblib.load, np.load and pickle.load on a
file in a child process with a recording unpickler; the fuzzer (``tests/scan_fuzz.py``) mutates
containers. Whenever a loader reaches a global outside the pickle allowlist, the scanner must
block at every tier tested. The fuzz run here is short (a fixed seed, a fixed mutant count and a
time cap); ``bench/scan_fuzz_bench.py`` is the long run.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import scan_fuzz  # noqa: E402
import scan_oracle  # noqa: E402

FUZZ_SEED = 20260610
FUZZ_MUTANTS = int(os.environ.get("AIRLOCK_FUZZ_MUTANTS", "800"))
FUZZ_TIME_CAP_S = float(os.environ.get("AIRLOCK_FUZZ_SECONDS", "45"))


@pytest.fixture(scope="module")
def oracle_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, scan_oracle.OracleResult]:
    """One oracle child for every file the oracle's own tests need (the child imports torch once)."""
    root = tmp_path_factory.mktemp("oracle")
    marker = root / "marker-must-not-exist"
    files = {
        "evil": scan_fuzz.evil_pickle(("os", "system", f"touch {marker}"), "global", 2),
        "evil_posix_memo": scan_fuzz.evil_pickle(("posix", "system", f"touch {marker}"), "memo", 4),
        "evil_exec_text": scan_fuzz.evil_pickle(("builtins", "exec", f"open({str(marker)!r}, 'w')"), "text", 0),
        "zf_printable": scan_fuzz.joblib_zf_printable(
            scan_fuzz.evil_pickle(("os", "system", f"touch {marker}"), "text", 0)
        ),
        # pickle's pure-Python unpickler (joblib's) runs an INST whose last line EOF cut short; C does not.
        "truncated_inst": f"(Vtouch {marker}\nios\nsystemX".encode(),
        # A module that does not exist: every loader raises there, so nothing is reached.
        "unresolvable": b"c_co`ecs\nencode\n(tR.",
    }
    for seed in scan_fuzz.build_seeds():
        files[seed.name] = seed.data
    paths = {}
    for name, data in files.items():
        assert data is not None, name
        paths[name] = root / f"{name}.bin"
        paths[name].write_bytes(data)
    results = scan_oracle.run_oracle(list(paths.values()))
    assert not marker.exists(), "a payload ran inside the oracle"
    return {name: results[str(p)] for name, p in paths.items()}


@pytest.mark.slow
def test_oracle_records_payload_globals_without_running_them(oracle_results) -> None:
    allowed = scan_oracle.airlock_allowlist()
    for name, loaders in (("evil", scan_oracle.LOADERS), ("evil_posix_memo", scan_oracle.LOADERS)):
        outside = oracle_results[name].outside(allowed)
        assert set(outside) == set(loaders), (name, outside)
    assert oracle_results["evil"].outside(allowed)["pickle"] == ["os:system"]
    assert oracle_results["evil_posix_memo"].outside(allowed)["torch"] == ["posix:system"]
    assert oracle_results["evil_exec_text"].outside(allowed)["joblib"] == ["builtins:exec"]
    # joblib's compatibility format is opened by joblib.load alone.
    assert set(oracle_results["zf_printable"].outside(allowed)) == {"joblib"}
    assert oracle_results["truncated_inst"].outside(allowed) == {"joblib": ["os:system"]}
    unresolvable = oracle_results["unresolvable"]
    assert unresolvable.outside(allowed) == {}
    assert all("ModuleNotFoundError" in (r.error or "") for n, r in unresolvable.loaders.items() if n != "numpy")


@pytest.mark.slow
def test_oracle_sees_only_allowlisted_globals_in_benign_containers(oracle_results) -> None:
    allowed = scan_oracle.airlock_allowlist()
    expected_openers = {
        "torch_zip_p2": "torch", "torch_legacy_p4": "torch", "torch_tar": "torch", "joblib_raw": "joblib",
        "joblib_xz": "joblib", "joblib_zf": "joblib", "npy_object": "numpy", "npz": "numpy", "pickle_p0": "pickle",
    }  # fmt: skip
    for name, loader in expected_openers.items():
        result = oracle_results[name]
        assert result.crashed is None, (name, result.crashed)
        assert result.loaders[loader].error is None, (name, loader, result.loaders[loader].error)
        assert result.outside(allowed) == {}, (name, result.outside(allowed))
    # The torch zip's tensors really are rebuilt through the allowlisted rebuild function.
    assert "torch._utils:_rebuild_tensor_v2" in oracle_results["torch_zip_p2"].loaders["torch"].globals


def test_mutants_are_reproducible_from_the_seed() -> None:
    """A seed and a count name the same mutants on every run (how a CI failure is reproduced)."""
    seeds = scan_fuzz.build_seeds()
    runs = []
    for _ in range(2):
        rng = random.Random(11)
        runs.append([scan_fuzz.generate(rng, seeds, i) for i in range(60)])
    assert [(m.data, m.ops) for m in runs[0]] == [(m.data, m.ops) for m in runs[1]]
    assert len({m.ops[0].split(":")[0] for m in runs[0]}) >= 8, "the mutators drawn are too few to mean anything"


def test_printable_zf_generator_writes_text() -> None:
    """The ZF generator really writes joblib's format in printable UTF-8 (the fuzz covers that class)."""
    from airlock.scan.detect import is_text

    data = scan_fuzz.joblib_zf_printable(scan_fuzz.evil_pickle(("os", "system", "true"), "text", 0))
    assert data is not None and data.startswith(b"ZF") and is_text(data)


@pytest.mark.slow
def test_differential_catches_a_scanner_that_allows_everything(oracle_results) -> None:
    """The comparison itself can fail: a scanner that allows everything disagrees on the payloads only."""
    allowed = scan_oracle.airlock_allowlist()
    tiers = scan_fuzz.TIERS
    allow_all = scan_fuzz.Verdicts({t: "allow" for t in tiers}, {t: False for t in tiers}, {t: [] for t in tiers})
    stats = scan_fuzz.CampaignStats()
    found: list[scan_fuzz.Disagreement] = []
    for index, (name, result) in enumerate(sorted(oracle_results.items())):
        mutant = scan_fuzz.Mutant(index, name, "fixture", [name], b"")
        scan_fuzz._compare(mutant, result, allow_all, allowed, tiers, stats, found, None)
    disagreeing = {d.mutant.seed for d in found}
    assert disagreeing == {"evil", "evil_posix_memo", "evil_exec_text", "zf_printable", "truncated_inst"}
    assert stats.disagreements == 2 * len(disagreeing)  # one per tier
    assert stats.by_tier == {t: len(disagreeing) for t in tiers}


@pytest.mark.slow
def test_scanner_blocks_whatever_a_loader_would_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fixed seed, capped: every mutant a loader would take a non-allowlisted global from is blocked."""
    stats, found = scan_fuzz.run_campaign(
        seed=FUZZ_SEED,
        count=FUZZ_MUTANTS,
        time_budget_s=FUZZ_TIME_CAP_S,
        workdir=tmp_path / "mutants",
        repro_dir=tmp_path / "repro",
    )
    with capsys.disabled():
        print()
        for line in stats.lines():
            print(f"[scan fuzz] {line}")
        print(f"[scan fuzz] mutants={stats.tried} disagreements={stats.disagreements}")
    assert stats.tried >= min(FUZZ_MUTANTS, 100), "the fuzz run did not get far enough to mean anything"
    assert stats.scanner_raised == 0, "scan_model raised on a mutant (see the counts above)"
    assert stats.reached_outside > 0, "no mutant reached a payload: the fuzzer is not exercising the scanner"
    details = "\n".join(d.summary() for d in found[:20])
    assert not found, f"{len(found)} disagreements (reproducers in {tmp_path / 'repro'}):\n{details}"
