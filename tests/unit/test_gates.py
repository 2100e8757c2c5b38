"""The ingest gates end to end without Airflow: every verdict re-derived from the run's records and the registry.

A "run" here is what the DAG's tasks leave in quarantine (source record, files,
manifest, scan report, stage records) in a temporary root; the registry is a
real filesystem registry with a local signing key; Airflow's HITL records are a
fake :class:`airlock.approval.RunRecords`. Nothing here reads XCom, which is
the point: forging XCom, task states or conf cannot change any outcome below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airlock.aibom import AibomError, DerivationRecord
from airlock.approval import ApprovalRefused, HitlRecord, HitlUser, binding_line, md
from airlock.config import load_settings
from airlock.ingest import (
    APPROVAL_RECORD,
    AIBOM,
    SCAN_REPORT,
    GateRefused,
    RunParams,
    ScanBlocked,
    build_aibom_run,
    gather_facts,
    own_name,
    prepare_approval_form,
    promote_run,
    record_download,
    record_source,
    resolve_run,
    review_run,
    run_area,
    run_dir,
    scan_quarantine,
    sign_run,
)
from airlock.manifest import ModelRef, build_manifest, hash_tree, save_manifest
from airlock.registry import open_registry
from airlock.signing import LocalKeySigner
from airlock.sources import PublishedFile, ResolvedSource
from tests.signing_fixtures import trust_store_for

SAFETENSORS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "
# No config.json: not a model lm-eval can load, so no evaluation report is needed below tier critical (the
# evaluation gate itself is exercised below with a stand-in verdict, and end to end in test_evaluate_stage.py).
CLEAN = {"model.safetensors": SAFETENSORS}
# GLOBAL os.system + REDUCE: never executed, only scanned.
EVIL = {"config.json": b"{}", "pytorch_model.bin": b"cos\nsystem\n(S'touch /tmp/airlock-x'\ntR."}
REMOTE_CODE = {**CLEAN, "modeling_x.py": b"print('custom code')\n"}


@dataclass
class Records:
    """Airflow's records of one run, as the fake API returns them."""

    hitl: list[HitlRecord] = field(default_factory=list)
    triggered_by: str | None = "operator"

    def triggering_user(self) -> str | None:
        return self.triggered_by

    def approval_records(self) -> list[HitlRecord]:
        return list(self.hitl)


class Form:
    """The approve task's operator, as far as the form hook touches it."""

    subject = body = ""
    assigned_users: list = []


class NeverSign:
    def __call__(self):
        raise AssertionError("the gate let the run reach the signer")


@pytest.fixture()
def env(tmp_path: Path):
    signer = LocalKeySigner.generate()
    settings = load_settings({
        "AIRLOCK_QUARANTINE_ROOT": str(tmp_path / "q"), "AIRLOCK_REGISTRY": str(tmp_path / "registry"),
        "AIRLOCK_REVIEWERS": "reviewer,reviewer2", "AIRLOCK_OWNER_REVIEWERS": '{"vision": ["vision-lead"]}',
    })
    registry = open_registry(str(tmp_path / "registry"), signer=signer, trust=trust_store_for(signer))
    return Env(settings, registry, signer)


@dataclass
class Env:
    settings: object
    registry: object
    signer: LocalKeySigner

    def run(self, run_id: str, *, repo: str = "acme/model", rev: str = "a" * 40, tier: str = "medium",
            files: dict[str, bytes] = CLEAN, scan: bool = True, kind: str = "hf", **params) -> dict:
        """What resolve_source .. scan_model leave behind for ``run_id``; returns the run's params."""
        resolved = ResolvedSource(uri=f"{kind}://{repo}", kind=kind, location=repo, requested_revision="main",
                                  revision=rev, files=tuple(PublishedFile(path=p, size=len(d)) for p, d in files.items()))
        conf = {"source": f"{kind}://{repo}", "revision": None, "owner": "ml-platform", "risk_tier": tier, **params}
        resolve_run(self.settings, run_id, conf, lambda: resolved, self.registry)
        area = run_area(self.settings.quarantine_root, run_id)
        area.create()
        for path, data in files.items():
            (area.files_dir / path).write_bytes(data)
        manifest = build_manifest(ModelRef(name=resolved.model_name, source=resolved.uri, revision=rev),
                                  hash_tree(area.files_dir))
        save_manifest(manifest, area.manifest_file)

        class Result:
            bytes = sum(len(d) for d in files.values())

        Result.files = len(files)
        record_download(area, resolved, Result, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:01+00:00")
        if scan:
            try:
                scan_quarantine(area, tier, lambda _line: None)
            except ScanBlocked:
                pass  # scan_model failed; an operator may still mark it success
        return conf

    def form(self, run_id: str, conf: dict, triggered_by: str = "operator") -> Form:
        form = Form()
        prepare_approval_form(form, run_id, conf, triggered_by, self.settings, self.registry)
        return form

    def answer(self, form: Form, option: str = "Approve", who: str = "reviewer", try_number: int = 1) -> HitlRecord:
        return HitlRecord(dag_id="model_ingest", run_id="r", task_id="approve", try_number=try_number,
                          subject=form.subject, body=form.body,
                          assigned_users=tuple(HitlUser(u["id"], u["name"]) for u in form.assigned_users),
                          responded_by=HitlUser(who, who), responded_at="2026-01-01T00:02:00+00:00",
                          chosen_options=(option,))

    def sign(self, run_id: str, conf: dict, records: Records | None, signer=None) -> dict:
        return sign_run(self.settings, run_id, conf, self.registry, records, signer or (lambda: self.signer),
                        lambda _line: None)

    def release(self, run_id: str, conf: dict, records: Records | None = None) -> dict:
        """sign_model, build_aibom and promote, as the DAG runs them."""
        self.sign(run_id, conf, records)
        build_aibom_run(self.settings, run_id, conf, self.registry, lambda: self.signer)
        return promote_run(self.settings, run_id, conf, self.registry, records, actor=f"test/{run_id}")

    def nothing_released(self, model: str = "acme/model") -> bool:
        return self.registry.model_state(model) is None


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("registry_name", "demo/tiny-gpt2\n", "ORG/NAME"),
        ("registry_name", "demo/tiny-gpt2/x", "ORG/NAME"),
        ("owner", "ml-platform\n**Scan:** allow", "no newlines or Markdown"),
        ("owner", "[ml](https://evil.example)", "no newlines or Markdown"),
        ("owner", "ml_platform", "no newlines or Markdown"),
        ("revision", "main\n", "branch, tag"),
        ("source", "hf://demo/tiny-gpt2\n", "hf://org/name"),
    ],
)
def test_parameters_must_match_as_a_whole(name: str, value: str, rule: str) -> None:
    params = {"source": "hf://demo/tiny-gpt2", "revision": None, "owner": "ml-platform", "risk_tier": "low",
              name: value}
    with pytest.raises(GateRefused, match=rf"parameter {name}=.*refused: .*{rule}"):
        RunParams.from_params(params)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r["steps"].extend([r["steps"][0]] * 16),
        lambda r: r["steps"][0].update(tool="t" * 300),
        lambda r: r["steps"][0].update(description="d" * 3000),
        lambda r: r["steps"][0].update(parameters={f"p{i}": i for i in range(65)}),
        lambda r: r["steps"][0].update(parameters={"p": "v" * 300}),
        lambda r: r["parent"].update(model="demo/tiny-gpt2\n"),
    ],
    ids=["steps", "tool", "description", "parameter-count", "parameter-length", "parent-newline"],
)
def test_derivation_records_are_bounded(mutate) -> None:
    record = _derivation("a" * 64, "b" * 64)
    mutate(record)
    with pytest.raises(AibomError):
        DerivationRecord.load(record)


def test_a_sources_own_name() -> None:
    def source(kind: str, location: str) -> ResolvedSource:
        return ResolvedSource(uri=f"{kind}://{location}", kind=kind, location=location, requested_revision=None,
                              revision="sha256:" + "a" * 64, files=())

    assert own_name(source("hf", "demo/tiny-gpt2")) == "demo/tiny-gpt2"
    # A drop's path is whatever its writer chose: never an identity.
    assert own_name(source("s3", "bucket/meta-llama/Llama-3.1-8B/")) is None
    assert own_name(source("file", "/srv/drops/acme/model-y")) is None


def test_the_source_is_pinned_once_per_run(env) -> None:
    calls = []
    resolved = ResolvedSource(uri="hf://acme/model", kind="hf", location="acme/model", requested_revision="main",
                              revision="a" * 40, files=())
    for _ in range(2):
        record_source(env.settings.quarantine_root, "r", lambda: calls.append(1) or resolved)
    assert calls == [1]


# --------------------------------------------------------------------------- evaluation verdicts


@dataclass(frozen=True)
class _Verdict:
    decision: str
    reason: str


def test_an_evaluation_drop_requires_a_human_approval(env, monkeypatch) -> None:
    import airlock.evaluate.stage as evaluation

    conf = env.run("r1", tier="medium")
    assert review_run(env.settings, "r1", conf, env.registry) is False
    monkeypatch.setattr(evaluation, "checked_evaluation", lambda *_a: _Verdict(
        "requires_approval", "airlock_mc/acc dropped 0.2 below the latest approved version (margin 0.05)"))
    assert review_run(env.settings, "r1", conf, env.registry) is True
    assert md("evaluation: airlock_mc/acc dropped 0.2") in env.form("r1", conf).body  # among the reasons, escaped
    with pytest.raises(ApprovalRefused, match="Airflow holds none"):
        env.sign("r1", conf, Records(), signer=NeverSign())
    assert env.nothing_released()


def test_an_evaluation_block_is_re_derived_at_signing(env, monkeypatch) -> None:
    import airlock.evaluate.stage as evaluation
    from airlock.evaluate.stage import EvaluationBlocked

    conf = env.run("r1", tier="medium")

    def blocked(*_args):
        raise EvaluationBlocked("evaluation blocks at tier medium: airlock_mc/acc 0.41 below 0.6")

    monkeypatch.setattr(evaluation, "checked_evaluation", blocked)
    with pytest.raises(EvaluationBlocked, match="below 0.6"):
        env.sign("r1", conf, None, signer=NeverSign())
    assert env.nothing_released()


# --------------------------------------------------------------------------- approval from Airflow's records


def test_no_approval_needed_signs_promotes_and_records_the_policy(env) -> None:
    conf = env.run("r1")
    assert review_run(env.settings, "r1", conf, env.registry) is False
    promoted = env.release("r1", conf, records=None)  # dag.test: no Airflow API, none needed
    assert promoted["created"] is True
    state = env.registry.model_state("acme/model")
    assert state.versions[0].approver == "policy:medium:no-approval-required"
    assert state.owner == "ml-platform" and state.source == "hf://acme/model"


def test_a_required_approval_cannot_be_read_from_anywhere_but_airflow(env) -> None:
    conf = env.run("r1", tier="high")
    assert review_run(env.settings, "r1", conf, env.registry) is True
    with pytest.raises(ApprovalRefused, match="no airlock_airflow connection"):
        env.sign("r1", conf, None, signer=NeverSign())
    # The approve task marked success (and any XCom forged): Airflow holds no answer.
    with pytest.raises(ApprovalRefused, match="Airflow holds none"):
        env.sign("r1", conf, Records(), signer=NeverSign())
    assert env.nothing_released()


def test_a_reviewers_approval_is_recorded_in_the_index_and_the_bom(env) -> None:
    conf = env.run("r1", tier="high")
    form = env.form("r1", conf, triggered_by="operator")
    assert form.assigned_users == [{"id": "reviewer", "name": "reviewer"}, {"id": "reviewer2", "name": "reviewer2"}]
    records = Records([env.answer(form)], triggered_by="operator")
    env.release("r1", conf, records)
    version = env.registry.model_state("acme/model").versions[0]
    assert version.approver == "reviewer [hitl:model_ingest/r/approve/try-1]"
    bom = json.loads((env.registry.store.root / "models/acme/model" / version.version / AIBOM).read_text())
    review = next(t for w in bom["formulation"][0]["workflows"] for t in w["tasks"] if t["name"] == "review")
    parameters = {p["name"]: p["value"] for p in review["inputs"][0]["parameters"]}
    assert parameters["approver"] == "reviewer" and parameters["hitl_record"] == "hitl:model_ingest/r/approve/try-1"
    assert parameters["triggered_by"] == "operator"


def test_a_rejection_stays_final_after_the_task_is_cleared_and_approved(env) -> None:
    conf = env.run("r1", tier="high")
    form = env.form("r1", conf)
    records = Records([env.answer(form, "Reject", try_number=1), env.answer(form, "Approve", "reviewer2", 2)])
    with pytest.raises(ApprovalRefused, match="rejection is final"):
        env.sign("r1", conf, records, signer=NeverSign())
    assert env.nothing_released()


def test_self_approval_is_refused(env) -> None:
    conf = env.run("r1", tier="high")
    form = env.form("r1", conf, triggered_by="reviewer")
    assert {u["id"] for u in form.assigned_users} == {"reviewer2"}  # Airflow refuses reviewer's answer itself
    with pytest.raises(ApprovalRefused, match="self-approval"):
        env.sign("r1", conf, Records([env.answer(form, who="reviewer")], triggered_by="reviewer"), NeverSign())


def test_an_approval_of_another_form_does_not_carry_over(env) -> None:
    """The reviewer approved the form of run r1; r2 (other files) cannot use that answer."""
    form = env.form("r1", env.run("r1", tier="high"))
    conf2 = env.run("r2", tier="high", rev="b" * 40, files={**CLEAN, "extra.json": b"{}"})
    with pytest.raises(ApprovalRefused, match="was not for this content and name"):
        env.sign("r2", conf2, Records([env.answer(form)]), signer=NeverSign())


def test_promote_rechecks_the_approval(env) -> None:
    """Signed under an approval, then a rejection is recorded (cleared, re-asked): promote refuses."""
    conf = env.run("r1", tier="high")
    form = env.form("r1", conf)
    approved = Records([env.answer(form)])
    env.sign("r1", conf, approved)
    build_aibom_run(env.settings, "r1", conf, env.registry, lambda: env.signer)
    later = Records([env.answer(form), env.answer(form, "Reject", "reviewer2", 2)])
    with pytest.raises(ApprovalRefused, match="rejection is final"):
        promote_run(env.settings, "r1", conf, env.registry, later, actor="t")
    assert env.nothing_released()


def test_promote_refuses_what_sign_model_never_signed(env) -> None:
    conf = env.run("r1")
    with pytest.raises(GateRefused, match="sign_model did not sign"):
        promote_run(env.settings, "r1", conf, env.registry, None, actor="t")
    assert env.nothing_released()


# --------------------------------------------------------------------------- scan


def test_a_blocked_scan_is_never_signed_whatever_the_task_state_says(env) -> None:
    conf = env.run("r1", files=EVIL, tier="low")  # scan_model failed; an operator marks it success
    with pytest.raises(ScanBlocked, match="scan verdict block"):
        env.sign("r1", conf, None, signer=NeverSign())
    assert env.nothing_released()


def test_a_run_without_a_scan_report_is_never_signed(env) -> None:
    conf = env.run("r1", scan=False)
    with pytest.raises(ScanBlocked, match="no scan report"):
        env.sign("r1", conf, None, signer=NeverSign())


def test_a_report_that_a_rescan_does_not_reproduce_is_refused(env) -> None:
    conf = env.run("r1", files=EVIL, tier="low")
    area = run_area(env.settings.quarantine_root, "r1")
    report = json.loads((area.path / SCAN_REPORT).read_text())
    report.update(verdict="allow", files=[{**f, "findings": []} for f in report["files"]])
    (area.path / SCAN_REPORT).write_text(json.dumps(report))
    with pytest.raises(ScanBlocked, match="does not match a re-scan"):
        env.sign("r1", conf, None, signer=NeverSign())


def test_promote_refuses_a_bom_that_does_not_bind_the_scan_report(env) -> None:
    conf = env.run("r1")
    env.sign("r1", conf, None)
    build_aibom_run(env.settings, "r1", conf, env.registry, lambda: env.signer)
    area = run_area(env.settings.quarantine_root, "r1")
    bom = json.loads((area.path / AIBOM).read_text())
    component = bom["metadata"]["component"]
    component["externalReferences"] = [r for r in component["externalReferences"] if r.get("comment") != "scan-report"]
    (area.path / AIBOM).write_text(json.dumps(bom))
    with pytest.raises(ScanBlocked, match="does not bind this run's scan report"):
        promote_run(env.settings, "r1", conf, env.registry, None, actor="t")
    assert env.nothing_released()


def test_flagged_findings_need_approval_and_are_on_the_form(env) -> None:
    conf = env.run("r1", files=REMOTE_CODE, tier="medium")
    assert review_run(env.settings, "r1", conf, env.registry) is True
    body = env.form("r1", conf).body
    assert "the scan flagged" in body and "modeling\\_x\\.py" in body


# --------------------------------------------------------------------------- names and ownership


def test_a_registry_name_other_than_the_sources_always_needs_approval(env) -> None:
    conf = env.run("r1", repo="attacker/evil", tier="low", registry_name="meta/llama")
    assert review_run(env.settings, "r1", conf, env.registry) is True
    form = env.form("r1", conf)
    assert "Registry name differs from the source" in form.body
    with pytest.raises(ApprovalRefused, match="registry name meta/llama differs from the source's own name"):
        env.sign("r1", conf, Records(), signer=NeverSign())
    assert env.nothing_released("meta/llama")


def test_a_drops_registry_name_is_bound_by_a_human_at_the_first_release(env) -> None:
    """A drop's path is chosen by whoever writes it, so "meta-llama/llama" from a drop is a claim to approve."""
    drop = "vendor-drops/meta-llama/llama/"
    conf = env.run("d1", kind="s3", repo=drop, rev="sha256:" + "a" * 64, tier="low", registry_name="meta-llama/llama")
    assert review_run(env.settings, "d1", conf, env.registry) is True
    with pytest.raises(ApprovalRefused, match="s3:// drop has no name of its own"):
        env.sign("d1", conf, Records(), signer=NeverSign())
    env.release("d1", conf, Records([env.answer(env.form("d1", conf))]))
    # A later version from the same drop follows the record the approved first release fixed.
    later = env.run("d2", kind="s3", repo=drop, rev="sha256:" + "b" * 64, tier="low", registry_name="meta-llama/llama")
    assert review_run(env.settings, "d2", later, env.registry) is False


def test_a_later_version_from_another_source_needs_the_owners_reviewers(env) -> None:
    env.release("r1", env.run("r1", owner="vision"))
    conf = env.run("r2", repo="attacker/evil", rev="b" * 40, owner="vision", registry_name="acme/model")
    form = env.form("r2", conf)
    assert form.assigned_users == [{"id": "vision-lead", "name": "vision-lead"}]
    assert "Another source repository" in form.body and "Files compared with" in form.body
    with pytest.raises(ApprovalRefused, match="not one of the model owner's reviewers"):
        env.sign("r2", conf, Records([env.answer(form, who="reviewer")]), signer=NeverSign())
    assert env.sign("r2", conf, Records([env.answer(form, who="vision-lead")]))["approval"] == "hitl:model_ingest/r/approve/try-1"


def test_owner_and_minimum_tier_come_from_the_model_record(env) -> None:
    env.release("r1", env.run("r1", tier="medium"))
    with pytest.raises(GateRefused, match="owned by 'ml-platform'"):
        env.run("r2", rev="b" * 40, owner="attacker")
    with pytest.raises(GateRefused, match="minimum risk tier medium"):
        env.run("r3", rev="c" * 40, tier="low")
    # Refused at the first task: nothing was written for those runs (their teardown never runs).
    assert not run_dir(env.settings.quarantine_root, "r2").exists()
    assert not run_dir(env.settings.quarantine_root, "r3").exists()
    state = env.registry.model_state("acme/model")
    assert (state.owner, state.risk_tier.value) == ("ml-platform", "medium")


# --------------------------------------------------------------------------- derivation claims


def _derivation(parent_root: str, output_root: str | None, parent_model: str = "acme/model") -> dict:
    step = {"kind": "conversion", "method": "dtype-cast", "tool": "torch", "tool_version": "2.13.0",
            "parameters": {"to_dtype": "float16"}, "run_by": "ci"}
    if output_root is not None:
        step["output_root_digest"] = output_root
    return {"schema": "airlock.derivation/v1", "parent": {"model": parent_model, "root_digest": parent_root},
            "steps": [step]}


def _released_parent(env) -> str:
    env.release("p", env.run("p"))
    return env.registry.model_state("acme/model").versions[0].root_digest


def _root(env, run_id: str) -> str:
    return json.loads(run_area(env.settings.quarantine_root, run_id).manifest_file.read_text())["root_digest"]


def test_a_derivation_claim_must_be_about_this_model(env) -> None:
    parent_root = _released_parent(env)
    conf = env.run("d1", repo="acme/derived", files={**CLEAN, "extra.json": b"{}"},
                   derivation=_derivation(parent_root, "f" * 64))
    with pytest.raises(AibomError, match="is not this model's root digest"):
        env.sign("d1", conf, None, signer=NeverSign())
    conf = env.run("d2", repo="acme/derived2", files={**CLEAN, "extra.json": b"{}"},
                   derivation=_derivation(parent_root, None))
    with pytest.raises(AibomError, match="records no output_root_digest"):
        env.sign("d2", conf, None, signer=NeverSign())


def test_a_derivation_claim_needs_approval_and_is_on_the_form(env) -> None:
    parent_root = _released_parent(env)
    conf = env.run("d1", repo="acme/derived", files={**CLEAN, "extra.json": b"{}"})
    conf["derivation"] = _derivation(parent_root, _root(env, "d1"))
    assert review_run(env.settings, "d1", conf, env.registry) is True
    form = env.form("d1", conf)
    assert "Derivation claim" in form.body and "parent\\: acme\\/model\\@rev\\-aaaaaaaaaaaa" in form.body
    with pytest.raises(ApprovalRefused, match="claims to derive from acme/model@rev-aaaaaaaaaaaa"):
        env.sign("d1", conf, Records(), signer=NeverSign())
    promoted = env.release("d1", conf, Records([env.answer(form)]))
    assert promoted["model"] == "acme/derived"


def test_a_revoked_parent_is_refused(env) -> None:
    parent_root = _released_parent(env)
    version = env.registry.model_state("acme/model").versions[0].version
    env.registry.revoke("acme/model", version, reason="test", actor="admin")
    conf = env.run("d1", repo="acme/derived", files={**CLEAN, "extra.json": b"{}"})
    conf["derivation"] = _derivation(parent_root, _root(env, "d1"))
    with pytest.raises(AibomError, match="revoked"):
        review_run(env.settings, "d1", conf, env.registry)


def test_the_approval_the_signature_was_made_under_is_kept_beside_it(env) -> None:
    conf = env.run("r1", tier="high")
    form = env.form("r1", conf)
    env.sign("r1", conf, Records([env.answer(form)]))
    kept = json.loads((run_area(env.settings.quarantine_root, "r1").path / APPROVAL_RECORD).read_text())
    assert kept["record_id"] == "hitl:model_ingest/r/approve/try-1" and kept["triggered_by"] == "operator"
    assert form.body.splitlines()[-1] == binding_line(gather_facts(
        env.settings, "r1", RunParams.from_params(conf), env.registry, rescan=False).need.binding)


def test_a_rejection_is_named_first_even_when_the_runs_records_are_gone(env) -> None:
    """Cleared and re-run after teardown removed the quarantine: the refusal still says why it matters."""
    rejected = HitlRecord(dag_id="model_ingest", run_id="gone", task_id="approve", try_number=1, subject="s",
                          body="b", assigned_users=(HitlUser("reviewer", "reviewer"),),
                          responded_by=HitlUser("reviewer", "reviewer"), responded_at="2026-01-01T00:00:00+00:00",
                          chosen_options=("Reject",))
    conf = {"source": "hf://acme/model", "revision": None, "owner": "ml-platform", "risk_tier": "high"}
    with pytest.raises(ApprovalRefused, match="rejection is final"):
        env.sign("gone", conf, Records([rejected]), signer=NeverSign())
    with pytest.raises(ApprovalRefused, match="rejection is final"):
        promote_run(env.settings, "gone", conf, env.registry, Records([rejected]), actor="t")
