"""airlock.approval: the approval rule on Airflow's HITL records, the records' reader, and the form's escaping."""

from __future__ import annotations

import re

import pytest

from airlock.airflow_client import AirflowApiError
from airlock.approval import (
    ApprovalNeed,
    ApprovalRecordsUnavailable,
    ApprovalRefused,
    AirflowRunRecords,
    FormFacts,
    HitlRecord,
    HitlUser,
    assigned_users,
    binding_line,
    check_approval,
    md,
    render_form,
)
from airlock.errors import ConfigurationError

BINDING = "airlock-approval/v1:sha256:" + "ab" * 32
REVIEWERS = ("reviewer", "reviewer2")
NEED = ApprovalNeed(reasons=("tier high requires a human approval",), reviewers=REVIEWERS, binding=BINDING)
POLICY = "policy:high:no-approval-required"


def _record(option: str | None = "Approve", who: str = "reviewer", *, try_number: int = 1, body: str | None = None,
            assigned: tuple[str, ...] = REVIEWERS) -> HitlRecord:
    return HitlRecord(
        dag_id="model_ingest", run_id="r1", task_id="approve", try_number=try_number, subject="Approve?",
        body=body if body is not None else f"form\n\n{binding_line(BINDING)}",
        assigned_users=tuple(HitlUser(u, u) for u in assigned),
        responded_by=HitlUser(who, who) if option else None,
        responded_at="2026-01-01T00:00:00+00:00" if option else None,
        chosen_options=(option,) if option else (),
    )


# --------------------------------------------------------------------------- the rule


def test_an_approval_by_a_reviewer_who_did_not_trigger_the_run_is_recorded_with_its_hitl_id() -> None:
    approval = check_approval(NEED, [_record()], triggered_by="admin", policy_label=POLICY)
    assert approval.approver == "reviewer" and approval.record_id == "hitl:model_ingest/r1/approve/try-1"
    assert approval.triggered_by == "admin" and approval.reasons == NEED.reasons
    assert approval.stage_parameters()["hitl_record"] == "hitl:model_ingest/r1/approve/try-1"


def test_without_a_required_approval_the_policy_is_the_approver() -> None:
    free = ApprovalNeed(reasons=(), reviewers=REVIEWERS, binding=BINDING)
    assert check_approval(free, [], triggered_by="admin", policy_label=POLICY).approver == POLICY


@pytest.mark.parametrize("records", [[], [_record(option=None)]], ids=["no-hitl-record", "unanswered"])
def test_a_required_approval_must_be_on_record(records: list[HitlRecord]) -> None:
    """The approve task marked success by hand (with or without a forged XCom) leaves no answer in HITL."""
    with pytest.raises(ApprovalRefused, match="a human approval is required .* Airflow holds none"):
        check_approval(NEED, records, triggered_by="admin", policy_label=POLICY)


@pytest.mark.parametrize("need", [NEED, ApprovalNeed(reasons=(), reviewers=REVIEWERS, binding=BINDING)],
                         ids=["required", "not-required"])
def test_a_rejection_in_any_try_is_final(need: ApprovalNeed) -> None:
    records = [_record("Reject", try_number=1), _record("Approve", "reviewer2", try_number=2)]
    with pytest.raises(ApprovalRefused, match="rejected by reviewer .*hitl:model_ingest/r1/approve/try-1.*final"):
        check_approval(need, records, triggered_by="admin", policy_label=POLICY)


def test_only_configured_reviewers_count() -> None:
    with pytest.raises(ApprovalRefused, match="operator, who is not one of the configured reviewers"):
        check_approval(NEED, [_record(who="operator", assigned=("operator",))], triggered_by="admin",
                       policy_label=POLICY)


def test_a_reviewer_who_was_not_assigned_to_the_form_does_not_count() -> None:
    """A form without assignees can be answered by anyone in Airflow: such an answer is no approval."""
    with pytest.raises(ApprovalRefused, match="not assigned to the form"):
        check_approval(NEED, [_record(assigned=())], triggered_by="admin", policy_label=POLICY)


def test_four_eyes_the_user_who_triggered_cannot_approve() -> None:
    with pytest.raises(ApprovalRefused, match="self-approval: reviewer triggered this run"):
        check_approval(NEED, [_record()], triggered_by="reviewer", policy_label=POLICY)


def test_an_unknown_triggering_user_fails_closed() -> None:
    with pytest.raises(ApprovalRefused, match="four eyes cannot be checked"):
        check_approval(NEED, [_record()], triggered_by=None, policy_label=POLICY)


def test_the_model_owners_reviewers_for_another_source() -> None:
    need = ApprovalNeed(reasons=("another source",), reviewers=("owner-reviewer",), owner_review=True,
                        binding=BINDING)
    with pytest.raises(ApprovalRefused, match="not one of the model owner's reviewers"):
        check_approval(need, [_record()], triggered_by="admin", policy_label=POLICY)
    ok = _record(who="owner-reviewer", assigned=("owner-reviewer",))
    assert check_approval(need, [ok], triggered_by="admin", policy_label=POLICY).approver == "owner-reviewer"


@pytest.mark.parametrize(
    "body",
    [
        "a form for other content\n\n" + binding_line("airlock-approval/v1:sha256:" + "cd" * 32),
        # The right binding somewhere in the form is not enough: only the form's own last line counts.
        f"owner: {binding_line(BINDING)}\n\n" + binding_line("airlock-approval/v1:sha256:" + "cd" * 32),
        "",
    ],
    ids=["other-binding", "binding-not-last", "empty"],
)
def test_the_approved_form_must_be_for_this_content_and_name(body: str) -> None:
    with pytest.raises(ApprovalRefused, match="was not for this content and name"):
        check_approval(NEED, [_record(body=body)], triggered_by="admin", policy_label=POLICY)


def test_the_latest_answer_counts_when_every_answer_approves() -> None:
    records = [_record(try_number=1), _record(who="reviewer2", try_number=2)]
    assert check_approval(NEED, records, triggered_by="admin", policy_label=POLICY).record_id == "hitl:model_ingest/r1/approve/try-2"


def test_the_form_is_assigned_to_reviewers_other_than_the_triggering_user() -> None:
    assert assigned_users(NEED, "reviewer") == [{"id": "reviewer2", "name": "reviewer2"}]
    with pytest.raises(ApprovalRefused, match="no reviewer other than the user who triggered"):
        assigned_users(ApprovalNeed(reasons=("x",), reviewers=("reviewer",)), "reviewer")
    with pytest.raises(ApprovalRefused, match="reviewers: none"):
        assigned_users(ApprovalNeed(reasons=("x",), reviewers=()), "admin")


# --------------------------------------------------------------------------- reading Airflow's records

HITL_PAYLOAD = {
    "options": ["Approve", "Reject"], "subject": "Approve?", "body": "b", "created_at": "2026-01-01T00:00:00Z",
    "assigned_users": [{"id": "reviewer", "name": "reviewer"}],
    "responded_by_user": {"id": "reviewer", "name": "reviewer"}, "responded_at": "2026-01-01T00:01:00Z",
    "chosen_options": ["Approve"], "params_input": {}, "response_received": True,
    "task_instance": {"dag_id": "model_ingest", "dag_run_id": "r9", "try_number": 2, "task_id": "approve"},
}


def test_a_hitl_record_from_the_api() -> None:
    record = HitlRecord.from_api(HITL_PAYLOAD)
    assert record.record_id == "hitl:model_ingest/r9/approve/try-2" and record.answered
    assert record.responded_by == HitlUser("reviewer", "reviewer") and record.chosen_options == ("Approve",)


def test_a_malformed_hitl_record_is_refused() -> None:
    with pytest.raises(ApprovalRefused, match="not in the expected form"):
        HitlRecord.from_api({"body": "no task instance"})


class _FakeClient:
    def __init__(self, routes: dict[str, object]):
        self.routes = routes
        self.calls: list[str] = []

    def request(self, method: str, path: str, **_kwargs):
        self.calls.append(path)
        answer = self.routes.get(path)
        if isinstance(answer, int):
            raise AirflowApiError(f"{method} {path}: HTTP {answer}", answer)
        if answer is None:
            raise AirflowApiError(f"{method} {path}: HTTP 404", 404)
        return answer


RUN = "/dags/model_ingest/dagRuns/manual__2026-01-01T00%3A00%3A00%2B00%3A00"


def test_every_try_of_the_approve_task_is_read_and_tries_without_a_form_are_skipped() -> None:
    rejected = {**HITL_PAYLOAD, "chosen_options": ["Reject"], "task_instance": {**HITL_PAYLOAD["task_instance"], "try_number": 1}}
    client = _FakeClient({
        RUN: {"triggering_user_name": "operator"},
        f"{RUN}/taskInstances/approve/tries": {"task_instances": [{"try_number": 1}, {"try_number": 2},
                                                                  {"try_number": 3}]},
        f"{RUN}/taskInstances/approve/-1/hitlDetails/tries/1": rejected,
        f"{RUN}/taskInstances/approve/-1/hitlDetails/tries/3": HITL_PAYLOAD,  # try 2 was marked by hand: no form
    })
    records = AirflowRunRecords(client, "model_ingest", "manual__2026-01-01T00:00:00+00:00")
    assert records.triggering_user() == "operator"
    assert [r.chosen_options for r in records.approval_records()] == [("Reject",), ("Approve",)]


def test_a_run_whose_approve_task_never_ran_has_no_records() -> None:
    records = AirflowRunRecords(_FakeClient({}), "model_ingest", "manual__2026-01-01T00:00:00+00:00")
    assert records.approval_records() == []


@pytest.mark.parametrize(("status", "error"), [(503, ApprovalRecordsUnavailable), (None, ApprovalRecordsUnavailable),
                                                (403, ConfigurationError), (404, ConfigurationError)])
def test_reading_errors_are_transient_or_configuration(status, error) -> None:
    class Failing:
        def request(self, method, path, **_kwargs):
            raise AirflowApiError("boom", status)

    with pytest.raises(error):
        AirflowRunRecords(Failing(), "model_ingest", "r").triggering_user()


# --------------------------------------------------------------------------- the form

HOSTILE = "ml\n\n**Scan:** allow ![x](http://evil.example/p.png) [approve](https://evil.example) <img src=x> " \
          "www.evil.example &lt; | cell `code` \u202egnp.exe"


def _facts(**changes) -> FormFacts:
    values = dict(
        registry_name="acme/model", version="rev-aaaaaaaaaaaa", own_name="acme/model", source="hf://acme/model",
        revision="a" * 40, owner="ml-platform", tier="high", triggered_by="operator", root_digest="c" * 64,
        files=2, total_bytes=38, scan_verdict="allow", scan_report_sha256="d" * 64, findings=(),
        reasons=("tier high requires a human approval",), binding=BINDING,
    )
    values.update(changes)
    return FormFacts(**values)


def test_md_escapes_every_markdown_and_html_control_and_keeps_values_on_one_line() -> None:
    escaped = md(HOSTILE)
    assert "\n" not in escaped and "\u202e" not in escaped
    assert "\\<U+000A\\>" in escaped and "\\<U+202E\\>" in escaped
    assert not re.search(r"(?<!\\)[\[\]()!*<>|`&]", escaped)


def test_hostile_values_cannot_restyle_the_form() -> None:
    from markdown_it import MarkdownIt

    facts = _facts(owner=HOSTILE, source=HOSTILE, triggered_by=HOSTILE, own_name=None,
                   findings=(("flag", HOSTILE, HOSTILE, HOSTILE),), derivation=(HOSTILE,))
    subject, body = render_form(facts)
    html = MarkdownIt("gfm-like").render(body)
    assert "<a " not in html and "<img" not in html and "<strong>Scan:</strong>" not in html
    assert "<code>" not in html and "evil.example" in html  # shown, as text
    assert "\n" not in subject and "<U+000A>" in subject
    assert body.splitlines()[-1] == binding_line(BINDING)
    # Every table row is still one row: the value could not add lines or cells.
    rows = [line for line in body.splitlines() if line.startswith("| ")]
    assert len(rows) == 9 and all(len(re.findall(r"(?<!\\)\|", row)) == 3 for row in rows)


def test_the_form_shows_what_the_reviewer_decides_on() -> None:
    from airlock.approval import FileChange

    facts = _facts(
        registry_name="demo/tiny-gpt2", own_name="attacker/evil", source="hf://attacker/evil",
        model_owner="ml-platform", model_min_tier="high", model_source="hf://demo/tiny-gpt2",
        findings=(("flag", "remote_code.auto_map", "config.json", "auto_map names custom code"),),
        derivation=("parent: demo/base@rev-1 (sha256:ee, approved)",), previous_version="rev-000000000000",
        changes=(FileChange("model.safetensors", "changed"),),
        reasons=("registry name demo/tiny-gpt2 differs from the source's own name attacker/evil",),
    )
    _subject, body = render_form(facts)
    assert "Registry name differs from the source" in body and "attacker\\/evil" in body
    assert "Another source repository" in body and "only that owner's reviewers" in body
    assert "remote\\_code\\.auto\\_map in config\\.json: auto\\_map names custom code" in body
    assert "Triggered by | operator" in body and "parent\\: demo\\/base\\@rev\\-1" in body
    assert "changed: model\\.safetensors" in body and "rev\\-000000000000" in body
