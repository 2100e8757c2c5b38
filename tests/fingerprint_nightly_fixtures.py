"""Registries for the nightly fingerprint tests: really signed versions carrying fingerprint reports.

Each version is signed (``model.sig`` over its files, subject ``org/name@version``), its AI-BOM pins the
signature and every report and is signed too, and it is promoted through the registry API: exactly
what a verified copy requires. The reports are given as bytes, so a test can store the baseline of one
model with the files of another (a version whose behaviour no longer matches its baseline, with every
signature valid).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from airlock.aibom import (
    AibomInputs,
    ArtifactRef,
    build_aibom,
    serialize_aibom,
    sign_aibom,
)
from airlock.fingerprint.schema import (
    Calibration,
    CalibrationRun,
    Fingerprint,
    PromptOutput,
    PromptSetRef,
    Runtime,
    RuntimeClass,
    Settings,
)
from airlock.manifest import manifest_for_directory
from airlock.registry import (
    ModelName,
    PromotionRequest,
    PromotionResult,
    Registry,
    signed_subject_name,
)
from airlock.signing import LocalKeySigner

SOURCE = "hf://acme/tiny-lm"

_KINDS = {"fingerprint-baseline": "fingerprint", "fingerprint-calibration": "fingerprint",
          "fingerprint-samples": "fingerprint", "eval": "eval-report"}


def promote_version(registry: Registry, work: Path, signer: LocalKeySigner, *, model: str, version: str,
                    model_dir: Path, reports: dict[str, bytes] | None = None) -> PromotionResult:
    """Sign ``model_dir`` as ``model@version`` and promote it with ``reports`` (file name -> bytes) under
    ``reports/``, plus a scan report; the AI-BOM binds all of them."""
    from airlock.signing import sign_manifest

    work = work / f"promote-{model.replace('/', '_')}-{version}"
    artifacts = work / "artifacts"
    artifacts.mkdir(parents=True)
    manifest = manifest_for_directory(model_dir)
    signed = sign_manifest(manifest, signer, model_name=signed_subject_name(ModelName.parse(model), version))
    (artifacts / "model.sig").write_bytes(signed.bundle_bytes)
    report_paths = {"scan.json": artifacts / "scan.json"}
    report_paths["scan.json"].write_text(json.dumps({"verdict": "allow"}))
    for name, data in (reports or {}).items():
        (artifacts / name).write_bytes(data)
        report_paths[name] = artifacts / name
    refs = [ArtifactRef.from_file("signature", artifacts / "model.sig")]
    for name, path in report_paths.items():
        kind = next((k for prefix, k in _KINDS.items() if name.startswith(prefix)), "scan-report")
        refs.append(ArtifactRef.from_file(kind, path, key=f"reports/{name}"))
    inputs = AibomInputs.from_manifest(
        manifest, model=model, version=version, source=SOURCE, revision=None,
        timestamp=datetime(2026, 5, 1, tzinfo=UTC), version_url=registry.version_url(model, version), artifacts=refs,
    )
    bom = serialize_aibom(build_aibom(inputs))
    (artifacts / "aibom.cdx.json").write_bytes(bom)
    (artifacts / "aibom.sig").write_bytes(sign_aibom(bom, signer))
    request = PromotionRequest.from_manifest(
        manifest, model=model, version=version, model_dir=model_dir, signature=artifacts / "model.sig",
        aibom=artifacts / "aibom.cdx.json", aibom_signature=artifacts / "aibom.sig",
        reports=tuple(report_paths.values()), owner="ml-platform", risk_tier="medium", approver="policy:medium",
        actor="test", source=SOURCE,
    )
    return registry.promote(request)


def nightly_env(monkeypatch, tmp_path: Path, registry_root: Path, trust) -> dict[str, Path]:
    """Point the nightly check at ``registry_root`` with the host trust store ``trust`` and private host state."""
    paths = {"trust": tmp_path / "host" / "trust.pem", "host_state": tmp_path / "host" / "state",
             "checks": tmp_path / "host" / "checks"}
    paths["trust"].parent.mkdir(parents=True, exist_ok=True)
    trust.write(paths["trust"])
    monkeypatch.setenv("AIRLOCK_REGISTRY", str(registry_root))
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(paths["trust"]))
    monkeypatch.delenv("AIRLOCK_TRUST_STORE_SHA256", raising=False)
    monkeypatch.setenv("AIRLOCK_HOST_STATE", str(paths["host_state"]))
    monkeypatch.setenv("AIRLOCK_CHECKS_DIR", str(paths["checks"]))
    monkeypatch.delenv("AIRLOCK_FINGERPRINT_ENDPOINTS", raising=False)
    return paths


def scanned_area(root: Path, model_dir: Path, tier: str = "medium"):
    """A quarantine area holding a copy of ``model_dir`` as the ingest DAG leaves it before ``evaluate``:
    files, manifest, and an allowing scan report (the real scanner's)."""
    import shutil

    from airlock.ingest import scan_quarantine
    from airlock.manifest import save_manifest
    from airlock.quarantine import QuarantineArea

    area = QuarantineArea.for_run(root, "model_ingest", "manual__test", SOURCE)
    area.create()
    shutil.copytree(model_dir, area.files_dir, dirs_exist_ok=True)
    save_manifest(manifest_for_directory(area.files_dir), area.manifest_file)
    scan_quarantine(area, tier, lambda _line: None)
    return area


# A class no worker has (torch 0.0): planning routes by it, checking refuses it.
OLD_CPU = RuntimeClass(device_type="cpu", device_name="cpu", dtype="float32", torch="0.0", transformers="0.0")
CUDA = RuntimeClass(device_type="cuda", device_name="NVIDIA H200", dtype="bfloat16", torch="0.0", transformers="0.0")


def synthetic_fingerprint(runtime_class: RuntimeClass = OLD_CPU, seed: int = 0) -> Fingerprint:
    rng = random.Random(seed)
    prompts = [PromptOutput(id=f"p{i}", prompt_ids=[1, 2, 3], top_ids=[[1, 2], [3, 4]],
                            top_logprobs=[[-0.1, -2.0 - rng.random()], [-0.5, -1.5]], greedy_ids=[5, 6])
               for i in range(3)]
    return Fingerprint(prompt_set=PromptSetRef(id="airlock-canonical-v1", sha256="a" * 64, text_sha256="b" * 64),
                       settings=Settings(top_k=2, positions=2, greedy_tokens=2, bos_token_id=0),
                       runtime=Runtime(runtime_class=runtime_class, threads=1, batch_size=16),
                       prompts=prompts, text_token_ids=[7, 8, 9], created_at="2026-05-01T00:00:00+00:00",
                       seconds=0.1)


def _calibration(fp: Fingerprint) -> Calibration:
    return Calibration(baseline_digest=fp.digest(), prompt_set=fp.prompt_set, settings=fp.settings,
                       runtime_class=fp.runtime.runtime_class, runs=[CalibrationRun(batch_size=1, threads=1,
                                                                                    max_distance=0.0)],
                       floor=0.0, per_prompt_floor={p.id: 0.0 for p in fp.prompts})


def synthetic_reports(fp: Fingerprint, suffix: str = "") -> dict[str, bytes]:
    return {f"fingerprint-baseline{suffix}.json": fp.to_json().encode(),
            f"fingerprint-calibration{suffix}.json": _calibration(fp).to_json().encode()}


class FakeCompletions:
    """An OpenAI-style /v1/completions on a loopback port answering ``answer(request body)``; remembers requests."""

    def __init__(self, answer: Callable[[dict], str]) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                data = json.dumps({"choices": [{"index": 0, "text": answer(body)}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        self.httpd.shutdown()
