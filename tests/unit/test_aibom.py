"""The CycloneDX 1.6 AI-BOM: strict validity, hashes equal to the manifest, the derived model's pedigree chain."""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from airlock.aibom import (
    AibomError,
    AibomInputs,
    ArtifactRef,
    Considerations,
    DerivationRecord,
    StageRecord,
    build_aibom,
    performance_metrics,
    read_card,
    resolve_parent,
    serialize_aibom,
    sign_aibom,
    validate_aibom,
    verify_aibom_signature,
    write_aibom,
)
from airlock.manifest import manifest_for_directory
from airlock.registry import FilesystemStore, PromotionRequest, Registry

REPO = Path(__file__).resolve().parents[2]
REVISION = "0123456789abcdef0123456789abcdef01234567"
T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)

CARD = """---
license: apache-2.0
pipeline_tag: text-generation
datasets:
- wikitext
- demo/corpus
---

# demo/tiny-gpt2

A tiny model.
"""

LM_EVAL = {
    "results": {
        "arc_easy": {"alias": "arc_easy", "acc,none": 0.25, "acc_stderr,none": 0.01,
                     "acc_norm,none": 0.3, "acc_norm_stderr,none": "N/A"},
        "gsm8k": {"exact_match,strict-match": 0.0, "exact_match_stderr,strict-match": 0.0},
    },
    "versions": {"arc_easy": 1.0},
}


def _script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` by path (scripts/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-gpt2-shaped model: card, config, tokenizer files and float32 safetensors weights."""
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("models") / "demo" / "tiny-gpt2"
    root.mkdir(parents=True)
    (root / "README.md").write_text(CARD)
    (root / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                  "dtype": "float32", "n_embd": 8}, indent=2, sort_keys=True))
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        (root / name).write_text(json.dumps({"file": name}))
    generator = torch.Generator().manual_seed(7)
    save_file({"wte.weight": torch.randn(16, 8, generator=generator),
               "h.0.ln_1.bias": torch.zeros(8), "position_ids": torch.arange(4)},
              str(root / "model.safetensors"), metadata={"format": "pt"})
    return root


def _artifacts(base: Path, label: str) -> dict[str, Path]:
    base.mkdir(parents=True, exist_ok=True)
    paths = {"signature": base / "model.sig", "scan": base / "scan.json", "eval": base / "eval.json"}
    paths["signature"].write_text(json.dumps({"sig": label}))
    paths["scan"].write_text(json.dumps({"verdict": "allow", "for": label}))
    paths["eval"].write_text(json.dumps(LM_EVAL))
    return paths


def _stages(run_id: str) -> list[StageRecord]:
    names = [("download", "huggingface_hub", "1.0.0"), ("scan", "airlock-scan", "0.1.0"),
             ("evaluate", "lm-eval", "0.4.13"), ("sign", "airlock-sign", "0.1.0"), ("promote", "airlock", "0.1.0")]
    stages = []
    for n, (stage, tool, version) in enumerate(names):
        start = T0 + timedelta(minutes=n)
        end = None if stage == "promote" else start + timedelta(seconds=30)
        stages.append(StageRecord(stage=stage, tool=tool, tool_version=version, started_at=start, ended_at=end,
                                  parameters={"tier": "medium", "workers": 8, "strict": True}, run_id=run_id))
    return stages


def _inputs(model_dir: Path, artifacts: dict[str, Path], *, model: str = "demo/tiny-gpt2", version: str = "1",
            **overrides: Any) -> AibomInputs:
    manifest = manifest_for_directory(model_dir)
    fields: dict[str, Any] = dict(
        model=model, version=version, source=f"hf://{model}", revision=REVISION, model_dir=model_dir,
        timestamp=T0, version_url=f"file:///registry/models/{model}/{version}",
        artifacts=[ArtifactRef.from_file("signature", artifacts["signature"]),
                   ArtifactRef.from_file("scan-report", artifacts["scan"]),
                   ArtifactRef.from_file("eval-report", artifacts["eval"])],
        stages=_stages("manual__2026-05-01T12:00:00+00:00"), run_id="manual__2026-05-01T12:00:00+00:00",
        eval_results=LM_EVAL,
        considerations=Considerations(users=["platform engineers"], use_cases=["pipeline demos"],
                                      technical_limitations=["random weights"],
                                      ethical_considerations=[("none: generates gibberish", "")]),
    )
    fields.update(files=tuple(manifest.files), root_digest=manifest.root_digest)
    fields.update(overrides)
    return AibomInputs(**fields)


def _component(bom: dict) -> dict:
    return bom["metadata"]["component"]


# --------------------------------------------------------------------------- a model from the hub


def test_bom_is_strictly_valid_and_its_hashes_equal_the_manifest(parent_dir: Path, tmp_path: Path) -> None:
    artifacts = _artifacts(tmp_path / "a", "parent")
    bom = build_aibom(_inputs(parent_dir, artifacts))
    validate_aibom(bom)  # build_aibom validated already; again, explicitly, on the serialized bytes
    validate_aibom(serialize_aibom(bom))
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.6")

    manifest = manifest_for_directory(parent_dir)
    model = _component(bom)
    assert model["type"] == "machine-learning-model"
    assert model["purl"] == f"pkg:huggingface/demo/tiny-gpt2@{REVISION}"
    assert model["hashes"] == [{"alg": "SHA-256", "content": manifest.root_digest}]
    per_file = {c["name"]: c["hashes"][0]["content"] for c in model["components"]}
    assert per_file == {f.path: f.sha256 for f in manifest.files}
    assert all(c["type"] == "file" for c in model["components"])
    assert model["supplier"] == {"name": "demo"}
    assert model["licenses"] == [{"license": {"id": "Apache-2.0"}}]


def test_model_card_metrics_and_datasets(parent_dir: Path, tmp_path: Path) -> None:
    bom = build_aibom(_inputs(parent_dir, _artifacts(tmp_path / "a", "parent")))
    card = _component(bom)["modelCard"]
    params = card["modelParameters"]
    assert (params["task"], params["architectureFamily"], params["modelArchitecture"]) == (
        "text-generation", "gpt2", "GPT2LMHeadModel")
    assert params["inputs"] == [{"format": "text"}] and params["outputs"] == [{"format": "text"}]
    assert params["datasets"] == [{"ref": "dataset:demo/corpus"}, {"ref": "dataset:wikitext"}]
    datasets = {c["bom-ref"]: c for c in bom["components"]}
    assert datasets["dataset:wikitext"]["type"] == "data"
    metrics = card["quantitativeAnalysis"]["performanceMetrics"]
    acc = next(m for m in metrics if m["type"] == "acc")
    assert acc == {"type": "acc", "value": "0.25", "slice": "arc_easy",
                   "confidenceInterval": {"lowerBound": "0.2304", "upperBound": "0.2696"}}
    assert "confidenceInterval" not in next(m for m in metrics if m["type"] == "acc_norm")  # stderr "N/A"
    assert next(m for m in metrics if m["type"] == "exact_match")["slice"] == "gsm8k (filter strict-match)"
    assert card["considerations"]["technicalLimitations"] == ["random weights"]


def test_external_references_and_formulation(parent_dir: Path, tmp_path: Path) -> None:
    artifacts = _artifacts(tmp_path / "a", "parent")
    bom = build_aibom(_inputs(parent_dir, artifacts))
    references = {r["type"]: r for r in _component(bom)["externalReferences"]}
    assert references["distribution"]["url"] == f"hf://demo/tiny-gpt2@{REVISION}"
    signature = references["attestation"]
    assert signature["url"] == "file:///registry/models/demo/tiny-gpt2/1/model.sig"
    assert signature["hashes"][0]["content"] == hashlib.sha256(artifacts["signature"].read_bytes()).hexdigest()
    assert references["static-analysis-report"]["url"].endswith("/reports/scan.json")
    assert references["quality-metrics"]["url"].endswith("/reports/eval.json")

    [formula] = bom["formulation"]
    [ingest] = formula["workflows"]
    assert [t["name"] for t in ingest["tasks"]] == ["download", "scan", "evaluate", "sign", "promote"]
    evaluate = ingest["tasks"][2]
    assert evaluate["taskTypes"] == ["test"]
    assert evaluate["timeStart"] == "2026-05-01T12:02:00Z" and evaluate["timeEnd"] == "2026-05-01T12:02:30Z"
    assert {"name": "airlock:airflow:run-id", "value": "manual__2026-05-01T12:00:00+00:00"} in evaluate["properties"]
    assert {"name": "strict", "value": "true", "dataType": "boolean"} in evaluate["inputs"][0]["parameters"]
    tools = {c["bom-ref"]: c for c in formula["components"]}
    assert tools[evaluate["resourceReferences"][0]["ref"]] == {
        "type": "application", "bom-ref": "tool:lm-eval@0.4.13", "name": "lm-eval", "version": "0.4.13"}
    assert "timeEnd" not in ingest  # promote had not finished when the BOM was built


def test_the_same_inputs_give_the_same_bytes(parent_dir: Path, tmp_path: Path) -> None:
    artifacts = _artifacts(tmp_path / "a", "parent")
    first = serialize_aibom(build_aibom(_inputs(parent_dir, artifacts)))
    second = serialize_aibom(build_aibom(_inputs(parent_dir, artifacts)))
    assert first == second  # a retried task re-promotes as identical content


def test_vendor_drop_gets_a_generic_purl_pinned_by_digest(parent_dir: Path, tmp_path: Path) -> None:
    inputs = _inputs(parent_dir, _artifacts(tmp_path / "a", "x"), model="acme/vision", version="2024.1",
                     source="s3://drops/acme/vision/", revision="sha256:" + "a" * 64)
    bom = build_aibom(inputs)
    assert _component(bom)["purl"] == f"pkg:generic/acme/vision@2024.1?checksum=sha256:{inputs.root_digest}"


# --------------------------------------------------------------------------- invalid BOMs fail


def test_an_invalid_bom_raises_naming_the_path(parent_dir: Path, tmp_path: Path) -> None:
    bom = build_aibom(_inputs(parent_dir, _artifacts(tmp_path / "a", "parent")))
    broken = copy.deepcopy(bom)
    broken["metadata"]["component"]["hashes"][0]["content"] = "not-a-digest"
    with pytest.raises(AibomError, match=r"strict\) at \$\.metadata\.component\.hashes\[0\]\.content"):
        validate_aibom(broken)
    broken = copy.deepcopy(bom)
    broken["metadata"]["component"]["modelCard"]["modelParameters"]["weights"] = "extra field"
    with pytest.raises(AibomError, match="modelParameters"):
        validate_aibom(broken)


def test_a_bom_that_would_be_invalid_is_never_built(parent_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(AibomError, match="root_digest"):
        build_aibom(_inputs(parent_dir, _artifacts(tmp_path / "a", "x"), root_digest="abc"))
    with pytest.raises(AibomError, match="version_url is required"):
        build_aibom(_inputs(parent_dir, _artifacts(tmp_path / "a", "x"), version_url=None))


def test_broken_model_card_front_matter_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    with pytest.raises(AibomError, match=r"README\.md: front matter is not valid YAML"):
        read_card(tmp_path)
    (tmp_path / "README.md").write_text("---\nlicense: mit\n")
    with pytest.raises(AibomError, match="no closing"):
        read_card(tmp_path)


def test_lm_eval_results_without_stderr_have_no_interval() -> None:
    [metric] = performance_metrics({"results": {"hellaswag": {"acc,none": 0.5}}})
    assert metric.confidence_interval is None and metric.value == "0.5"
    assert performance_metrics(None) == []
    with pytest.raises(AibomError, match="task 'x'"):
        performance_metrics({"results": {"x": 3}})


# --------------------------------------------------------------------------- derivation records


def test_derivation_record_schema_names_the_field() -> None:
    base = {"schema": "airlock.derivation/v1", "parent": {"model": "demo/tiny-gpt2", "version": "1"}}
    fine_tune = {"kind": "fine-tune", "tool": "trl", "tool_version": "0.20.0", "dataset": "org/data",
                 "hyperparameters": {"lr": 2e-5, "epochs": 3}, "run_by": "alice", "duration_s": 3600}
    record = DerivationRecord.load({**base, "steps": [fine_tune]})
    assert record.steps[0].duration == 3600
    with pytest.raises(AibomError, match=r"field steps\.0\.fine-tune\.run_by"):
        DerivationRecord.load({**base, "steps": [{k: v for k, v in fine_tune.items() if k != "run_by"}]})
    with pytest.raises(AibomError, match="duration_s or both"):
        DerivationRecord.load({**base, "steps": [{k: v for k, v in fine_tune.items() if k != "duration_s"}]})
    with pytest.raises(AibomError, match="tool_version"):
        DerivationRecord.load({**base, "steps": [{**fine_tune, "tool_version": ">=0.20"}]})
    with pytest.raises(AibomError, match="parent"):
        DerivationRecord.load({**base, "parent": {"model": "demo/tiny-gpt2"}, "steps": [fine_tune]})
    with pytest.raises(AibomError, match="steps"):
        DerivationRecord.load({**base, "steps": []})


def _promote(registry: Registry, model_dir: Path, model: str, version: str, bom_path: Path,
             artifacts: dict[str, Path]) -> None:
    manifest = manifest_for_directory(model_dir)
    registry.promote(PromotionRequest.from_manifest(
        manifest, model=model, version=version, model_dir=model_dir, signature=artifacts["signature"],
        aibom=bom_path, reports=(artifacts["scan"], artifacts["eval"]), owner="ml-platform",
        risk_tier="low", approver="policy:low"))


@pytest.fixture()
def registry_with_parent(parent_dir: Path, tmp_path: Path) -> tuple[Registry, str]:
    """A registry holding demo/tiny-gpt2@1 with its AI-BOM; returns it and the parent's BOM sha256."""
    from tests.registry_contract import SIGNER, TRUST  # index checkpoints are signed

    registry = Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)
    artifacts = _artifacts(tmp_path / "parent-artifacts", "parent")
    version_url = registry.version_url("demo/tiny-gpt2", "1")
    written = write_aibom(_inputs(parent_dir, artifacts, version_url=version_url),
                          tmp_path / "parent-artifacts" / "aibom.cdx.json")
    _promote(registry, parent_dir, "demo/tiny-gpt2", "1", written.path, artifacts)
    return registry, written.sha256


def test_derived_model_pedigree_resolves_to_the_parents_registry_digest(
    parent_dir: Path, tmp_path: Path, registry_with_parent: tuple[Registry, str]
) -> None:
    registry, parent_bom_sha256 = registry_with_parent
    child_dir, record_dict = _script("demo_derived").build_fp16(parent_dir, tmp_path / "derived")
    assert json.loads(child_dir.with_name("tiny-gpt2-fp16.derivation.json").read_text()) == record_dict
    record = DerivationRecord.load(record_dict)
    assert record.parent.version is None  # found in the registry by digest
    parent = resolve_parent(record, registry)
    artifacts = _artifacts(tmp_path / "child-artifacts", "child")
    bom = build_aibom(_inputs(child_dir, artifacts, model="demo/tiny-gpt2-fp16", derivation=record, parent=parent))

    [ancestor] = _component(bom)["pedigree"]["ancestors"]
    released_parent = registry.released("demo/tiny-gpt2", "1")
    assert ancestor["hashes"] == [{"alg": "SHA-256", "content": released_parent.root_digest}]
    assert ancestor["purl"] == f"pkg:huggingface/demo/tiny-gpt2@{REVISION}"
    assert {"name": "airlock:registry:version", "value": "1"} in ancestor["properties"]
    # The chain continues, hash-pinned, into the parent's own BOM in the registry.
    [parent_bom] = ancestor["externalReferences"]
    assert parent_bom["type"] == "bom" and parent_bom["hashes"][0]["content"] == parent_bom_sha256
    stored = Path(parent_bom["url"].removeprefix("file://")).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == parent_bom_sha256
    assert json.loads(stored)["metadata"]["component"]["hashes"][0]["content"] == released_parent.root_digest

    derivation = bom["formulation"][0]["workflows"][1]
    [step] = derivation["tasks"]
    assert step["name"] == "conversion: dtype-cast" and step["taskTypes"] == ["build"]
    tools = {c["bom-ref"]: c for c in bom["formulation"][0]["components"]}
    import torch

    assert tools[step["resourceReferences"][0]["ref"]]["version"] == torch.__version__
    assert step["inputs"][0] == {"resource": {"ref": ancestor["bom-ref"]}}  # the step read the parent...
    assert step["outputs"] == [{"type": "artifact", "resource": {"ref": _component(bom)["bom-ref"]}}]  # ...made this
    assert {"name": "to_dtype", "value": "float16", "dataType": "string"} in step["inputs"][1]["parameters"]
    assert _component(bom)["modelCard"]["modelParameters"]["modelArchitecture"] == "GPT2LMHeadModel"


def test_fp16_build_is_deterministic_and_really_fp16(parent_dir: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    build_fp16 = _script("demo_derived").build_fp16
    first, record = build_fp16(parent_dir, tmp_path / "one")
    second, again = build_fp16(parent_dir, tmp_path / "two")
    assert record == again
    assert manifest_for_directory(first).root_digest == manifest_for_directory(second).root_digest
    with safe_open(str(first / "model.safetensors"), framework="pt") as weights:
        assert str(weights.get_tensor("wte.weight").dtype) == "torch.float16"
        assert str(weights.get_tensor("position_ids").dtype) == "torch.int64"  # integers are not cast
    assert json.loads((first / "config.json").read_text())["dtype"] == "float16"


def test_parent_with_another_digest_or_revoked_or_unknown_is_refused(
    registry_with_parent: tuple[Registry, str]
) -> None:
    registry, _ = registry_with_parent
    base = {"kind": "conversion", "method": "dtype-cast", "tool": "torch", "tool_version": "2.13.0"}

    def record(**parent: Any) -> DerivationRecord:
        return DerivationRecord.load({"parent": {"model": "demo/tiny-gpt2", **parent}, "steps": [base]})

    with pytest.raises(AibomError, match="recorded root_digest"):
        resolve_parent(record(version="1", root_digest="0" * 64), registry)
    with pytest.raises(AibomError, match="not in the registry"):
        resolve_parent(record(version="7"), registry)
    with pytest.raises(AibomError, match="not in the registry"):
        resolve_parent(record(root_digest="0" * 64), registry)
    external = resolve_parent(record(root_digest="0" * 64), registry, allow_external=True)
    assert external.version is None and external.purl.startswith("pkg:generic/demo/tiny-gpt2@")
    registry.revoke("demo/tiny-gpt2", "1", reason="poisoned", actor="sec")
    with pytest.raises(AibomError, match=r"is revoked \(poisoned\)"):
        resolve_parent(record(version="1"), registry)


# --------------------------------------------------------------------------- the BOM's own signature


def test_bom_signature_subject_is_the_bom_digest(parent_dir: Path, tmp_path: Path) -> None:
    from airlock.signing import LocalKeySigner

    data = serialize_aibom(build_aibom(_inputs(parent_dir, _artifacts(tmp_path / "a", "x"))))
    signer = LocalKeySigner.generate(key_name="airlock-model-signing")
    bundle = sign_aibom(data, signer)
    statement = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    assert statement["subject"] == [{"name": "aibom.cdx.json", "digest": {"sha256": hashlib.sha256(data).hexdigest()}}]
    assert statement["predicateType"] == "https://cyclonedx.org/bom"
    verify_aibom_signature(data, bundle, signer.public_key_pem.encode())
    with pytest.raises(AibomError, match="subject digest"):
        verify_aibom_signature(data + b" ", bundle, signer.public_key_pem.encode())
    other = LocalKeySigner.generate()
    with pytest.raises(AibomError, match="does not verify"):
        verify_aibom_signature(data, bundle, other.public_key_pem.encode())


def test_fine_tune_then_quantize_records_every_step(
    parent_dir: Path, tmp_path: Path, registry_with_parent: tuple[Registry, str]
) -> None:
    registry, _ = registry_with_parent
    intermediate = "e" * 64
    record = DerivationRecord.load({
        "parent": {"model": "demo/tiny-gpt2", "version": "1"},
        "steps": [
            {"kind": "fine-tune", "tool": "trl", "tool_version": "0.20.0", "dataset": "acme/support-tickets",
             "dataset_revision": "v3", "hyperparameters": {"learning_rate": 2e-5, "epochs": 3, "lora": True},
             "run_by": "alice@acme", "started_at": "2026-04-01T08:00:00Z", "ended_at": "2026-04-01T10:30:00Z",
             "output_root_digest": intermediate},
            {"kind": "quantization", "method": "GPTQ", "tool": "gptqmodel", "tool_version": "2.2.0",
             "parameters": {"bits": 4, "group_size": 128}, "run_by": "pipeline:quantize"},
        ],
    })
    parent = resolve_parent(record, registry)
    bom = build_aibom(_inputs(parent_dir, _artifacts(tmp_path / "c", "child"), model="acme/support-gpt2-gptq",
                              derivation=record, parent=parent))
    ancestors = _component(bom)["pedigree"]["ancestors"]
    assert [a["hashes"][0]["content"] for a in ancestors] == [parent.root_digest, intermediate]
    assert "step 1: fine-tune on acme/support-tickets" in _component(bom)["pedigree"]["notes"]
    fine_tune, quantize = bom["formulation"][0]["workflows"][1]["tasks"]
    assert {"ref": "dataset:acme/support-tickets"} in [i.get("resource") for i in fine_tune["inputs"]]
    assert {"name": "airlock:run-by", "value": "alice@acme"} in fine_tune["properties"]
    assert {"name": "airlock:duration-s", "value": "9000"} in fine_tune["properties"]
    assert fine_tune["outputs"][0]["resource"]["ref"] == ancestors[1]["bom-ref"]
    assert quantize["inputs"][0]["resource"]["ref"] == ancestors[1]["bom-ref"]
    assert {"name": "bits", "value": "4", "dataType": "integer"} in quantize["inputs"][1]["parameters"]
    assert "dataset:acme/support-tickets" in {c["bom-ref"] for c in bom["components"]}


def test_signed_bom_is_stored_beside_model_sig(parent_dir: Path, tmp_path: Path) -> None:
    from airlock.signing import LocalKeySigner
    from tests.registry_contract import SIGNER, TRUST  # index checkpoints are signed

    registry = Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)
    artifacts = _artifacts(tmp_path / "a", "x")
    written = write_aibom(_inputs(parent_dir, artifacts, version_url=registry.version_url("demo/tiny-gpt2", "1")),
                          tmp_path / "a" / "aibom.cdx.json")
    signer = LocalKeySigner.generate()
    (tmp_path / "a" / "aibom.sig").write_bytes(sign_aibom(written.path.read_bytes(), signer))
    manifest = manifest_for_directory(parent_dir)
    result = registry.promote(PromotionRequest.from_manifest(
        manifest, model="demo/tiny-gpt2", version="1", model_dir=parent_dir, signature=artifacts["signature"],
        aibom=written.path, aibom_signature=tmp_path / "a" / "aibom.sig", owner="ml", risk_tier="low",
        approver="policy:low"))
    assert result.aibom_sha256 == written.sha256
    version_dir = tmp_path / "registry" / "models" / "demo" / "tiny-gpt2" / "1"
    verify_aibom_signature((version_dir / "aibom.cdx.json").read_bytes(), (version_dir / "aibom.sig").read_bytes(),
                           signer.public_key_pem.encode())
