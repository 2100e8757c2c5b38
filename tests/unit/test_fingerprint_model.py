"""Fingerprint a tiny locally built GPT-2: calibrate, re-run, perturb, tamper; CLI and Data Docs.

Slow (a model build and a few forward passes, ~30-60 s on a loaded 2-core machine). Threads are
kept at 1: calibration here varies batch size only, so the test does not depend on free cores.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from airlock.cli import main
from airlock.fingerprint import (
    ComparisonRefused,
    FingerprintError,
    calibrate,
    compare,
    fingerprint_model,
)
from airlock.fingerprint.check import check

from tests.unit.fingerprint_lm import (
    build_tiny_lm,
    perturbed_copy,
    remapped_tokenizer_copy,
)

pytestmark = pytest.mark.slow

RUNS = ((16, 1), (1, 1), (4, 1))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fingerprint-models")
    base = build_tiny_lm(root / "base")
    return {
        "base": base,
        "perturbed": perturbed_copy(base, root / "perturbed", tensor="transformer.h.0.attn.c_attn.weight",
                                    relative_sigma=1e-5),
        "remapped": remapped_tokenizer_copy(base, root / "remapped", "Ġthe", "Ġand"),
    }


@pytest.fixture(scope="module")
def baseline(models):
    return calibrate(models["base"], runs=RUNS, device="cpu", model_ref={"name": "test/tiny", "version": "1"})


def _fp(path: Path, **kwargs):
    return fingerprint_model(path, device="cpu", threads=1, **kwargs)


def test_fingerprint_contents(baseline):
    fp, calibration = baseline
    assert len(fp.prompts) == 48 and fp.prompt_set.id == "airlock-canonical-v1"
    assert fp.settings.bos_token_id is not None and fp.model == {"name": "test/tiny", "version": "1"}
    for p in fp.prompts:
        assert len(p.top_ids) == fp.settings.positions == 16
        assert all(row == sorted(row, reverse=True) and row[0] <= 0 for row in p.top_logprobs)
        assert len(p.greedy_ids) == fp.settings.greedy_tokens
    assert len(fp.text_token_ids) > 1000
    rc = fp.runtime.runtime_class
    assert (rc.device_type, rc.dtype) == ("cpu", "float32") and fp.runtime.batch_size == 16
    assert [(r.batch_size, r.threads) for r in calibration.runs] == list(RUNS)
    assert math.isfinite(calibration.floor) and calibration.floor < 1e-6
    assert calibration.baseline_digest == fp.digest()


def test_unmodified_rerun_matches(models, baseline):
    fp, calibration = baseline
    again = _fp(models["base"], batch_size=5)
    result = compare(fp, again, calibration)
    assert result.verdict == "match", result.reason
    assert result.max_distance <= calibration.threshold
    assert result.greedy_agreement == 1.0


def test_one_matrix_with_1e_5_relative_noise_is_flagged(models, baseline):
    fp, calibration = baseline
    result = compare(fp, _fp(models["perturbed"]), calibration)
    assert result.verdict == "deviation"
    # well clear of the threshold, not a coin toss at its edge
    assert result.max_distance > 3 * calibration.threshold
    assert all(r.token_ids_equal for r in result.prompts)


def test_token_id_remap_is_flagged(models, baseline):
    fp, calibration = baseline
    result = compare(fp, _fp(models["remapped"]), calibration)
    assert result.verdict == "deviation"
    assert not result.text_token_ids_equal
    assert any(r.max_abs_dlogprob == math.inf for r in result.prompts[:-1])


def test_other_dtype_is_another_runtime_class(models, baseline):
    fp, calibration = baseline
    with pytest.raises(ComparisonRefused, match="runtime classes differ"):
        compare(fp, _fp(models["base"], dtype="float64"), calibration)


def test_remote_code_is_never_run(tmp_path, models):
    import shutil

    model = tmp_path / "remote"
    shutil.copytree(models["base"], model)
    marker = tmp_path / "remote-code-ran"
    (model / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="airlock_evil", auto_map={"AutoConfig": "modeling_evil.C",
                                                        "AutoModelForCausalLM": "modeling_evil.M"})
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(FingerprintError, match="cannot load"):
        _fp(model)
    assert not marker.exists()


def test_cli_run_and_compare(tmp_path, models, baseline, capsys):
    fp, calibration = baseline
    base_file, cal_file = tmp_path / "base.json", tmp_path / "cal.json"
    base_file.write_text(fp.to_json())
    cal_file.write_text(calibration.to_json())
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    assert main(["fingerprint", "run", str(models["base"]), "--out", str(good), "--device", "cpu",
                 "--batch-size", "3", "--threads", "1"]) == 0
    assert main(["fingerprint", "run", str(models["perturbed"]), "--out", str(bad), "--device", "cpu",
                 "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["fingerprint", "compare", str(base_file), str(good), "--calibration", str(cal_file)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("match:")
    assert main(["fingerprint", "compare", str(base_file), str(bad), "--calibration", str(cal_file),
                 "--out", str(tmp_path / "cmp.json")]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("deviation:")
    assert json.loads((tmp_path / "cmp.json").read_text())["verdict"] == "deviation"
    # a calibration of another baseline cannot be used: could not compare
    assert main(["fingerprint", "compare", str(good), str(bad), "--calibration", str(cal_file)]) == 2
    assert "different baseline" in capsys.readouterr().err


# Tags that make a browser fetch something as soon as the page opens.
_AUTOLOAD = re.compile(r"<(?:script|img|link|iframe|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//",
                       re.IGNORECASE)
_CSS_URL = re.compile(r"url\(\s*[\"']?(?:https?:)?//", re.IGNORECASE)


def test_data_docs_are_written_and_reference_nothing_online(tmp_path, models, baseline):
    fp, calibration = baseline
    docs = tmp_path / "docs"
    result = check(fp, _fp(models["perturbed"]), calibration, docs_dir=docs)
    assert result.verdict == "deviation" and result.gx_success is False
    assert result.docs_index == docs / "index.html" and result.docs_index.is_file()
    pages = list(docs.rglob("*.html")) + list(docs.rglob("*.css"))
    assert len(list(docs.rglob("*.html"))) >= 3
    for page in pages:
        text = page.read_text(encoding="utf-8", errors="replace")
        assert not _AUTOLOAD.search(text), page
        assert not _CSS_URL.search(text), page
    validation = next(p for p in docs.rglob("*.html") if "validations" in p.parts)
    assert "max_abs_dlogprob" in validation.read_text()
    # every asset a page loads is a file inside the site (GX itself writes the validation pages' favicon
    # path one directory short: still local, merely missing)
    for page in docs.rglob("*.html"):
        for ref in re.findall(r"<(?:script|link|img)\b[^>]*?\b(?:src|href)=\"([^\"#?]+)", page.read_text()):
            target = (page.parent / ref).resolve()
            assert docs.resolve() in target.parents, (page, ref)
            assert target.is_file() or ref.endswith("favicon.ico"), (page, ref)
