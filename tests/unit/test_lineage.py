"""Lineage: two kinds of Asset that never mix, registry-model events with digests and run id, and the
OpenLineage datasets each model_ingest task reports."""

from __future__ import annotations

from collections import defaultdict

import pytest

from airlock import lineage
from airlock.sources import PublishedFile, ResolvedSource

SHA = "a" * 64
SOURCE = ResolvedSource(
    uri="hf://demo/evil-pickle", kind="hf", location="demo/evil-pickle", requested_revision="main",
    revision="c" * 40, endpoint="http://127.0.0.1:8090",
    files=(PublishedFile(path="pytorch_model.bin", size=10, git_sha1="b" * 40, lfs_sha256=SHA),
           PublishedFile(path="config.json", size=2, git_sha1="d" * 40)),
)


class Accessor:
    def __init__(self) -> None:
        self.added: list[tuple[object, dict]] = []

    def add(self, asset, extra=None) -> None:
        self.added.append((asset, extra))


def test_a_quarantined_source_is_never_a_registry_model() -> None:
    events: defaultdict = defaultdict(Accessor)

    class Manifest:
        root_digest, files, total_size = SHA, [1, 2], 12

    extra = lineage.record_quarantine_event(events, SOURCE, Manifest(), "run-1")
    ((alias, accessor),) = events.items()
    ((asset, recorded),) = accessor.added
    assert alias.name == lineage.SOURCE_ALIAS
    assert (asset.name, asset.uri, asset.group) == (
        "source:hf:demo/evil-pickle", "airlock://sources/hf/demo/evil-pickle", "airlock-source")
    assert asset.extra["airlock_kind"] == "quarantine-source"  # Airflow drops the group of alias-created assets
    assert recorded == extra and extra["revision"] == SOURCE.revision and extra["root_digest"] == SHA
    assert extra["run_id"] == "run-1"
    assert asset.group != lineage.REGISTRY_MODEL_GROUP and not asset.uri.startswith("airlock://registry/")


def test_a_release_is_an_event_on_the_registry_model_with_version_digests_and_run() -> None:
    events: defaultdict = defaultdict(Accessor)
    promotion = {"model": "demo/tiny-gpt2", "version": "rev-1", "created": True, "url": "file:///r/models/demo/x/1",
                 "root_digest": SHA, "signature_sha256": "1" * 64, "aibom_sha256": "2" * 64, "plan_sha256": "3" * 64}
    extra = lineage.record_release_event(events, SOURCE, promotion, "manual__1")
    ((alias, accessor),) = events.items()
    ((asset, _),) = accessor.added
    assert alias.name == lineage.RELEASE_ALIAS
    assert (asset.name, asset.uri, asset.group) == ("demo/tiny-gpt2", "airlock://registry/demo/tiny-gpt2",
                                                   "airlock-registry-model")
    assert asset.extra["airlock_kind"] == "registry-model"
    assert {k: extra[k] for k in ("kind", "model", "version", "root_digest", "signature_sha256", "aibom_sha256",
                                  "run_id", "source", "revision")} == {
        "kind": "released", "model": "demo/tiny-gpt2", "version": "rev-1", "root_digest": SHA,
        "signature_sha256": "1" * 64, "aibom_sha256": "2" * 64, "run_id": "manual__1",
        "source": "hf://demo/evil-pickle", "revision": SOURCE.revision}


def test_registry_events_go_through_registry_aliases_only() -> None:
    with pytest.raises(ValueError):
        lineage.registry_alias(lineage.SOURCE_ALIAS)
    assert len(set(lineage.REGISTRY_ALIASES)) == 3 and lineage.SOURCE_ALIAS not in lineage.REGISTRY_ALIASES


def test_every_ingest_task_reports_what_it_read_and_wrote() -> None:
    quarantine = "/q/model_ingest/run/hf-demo-evil-pickle"
    expected = {
        "resolve_source": (["source"], ["quarantine"]),
        "download_to_quarantine": (["source"], ["quarantine"]),
        "verify_published_checksums": (["source", "quarantine"], ["quarantine"]),
        "hash_manifest": (["quarantine"], ["quarantine"]),
        "scan_model": (["quarantine"], ["quarantine"]),
        "promote": (["quarantine"], ["registry"]),
    }
    returned = {"quarantine": quarantine, "report_sha256": "9" * 64, "url": "s3://bucket/reg/models/demo/x/rev-1",
                "version": "rev-1", "model": "demo/x", "root_digest": SHA, "signature_sha256": "1" * 64}
    def kinds(datasets: list[lineage.LineageDataset]) -> list[str]:
        return ["source" if d.namespace.startswith("hf://") else "registry" if d.namespace.startswith("s3://")
                else "quarantine" for d in datasets]

    for task_id, (reads, writes) in expected.items():
        inputs, outputs = lineage.ingest_datasets(task_id, SOURCE, quarantine, SHA, returned)
        assert (kinds(inputs), kinds(outputs)) == (reads, writes), task_id
    inputs, outputs = lineage.ingest_datasets("verify_published_checksums", SOURCE, quarantine, None, returned)
    source = inputs[0]
    assert (source.namespace, source.name, source.version) == ("hf://127.0.0.1:8090", "demo/evil-pickle",
                                                               SOURCE.revision)
    assert source.digests["published"] == {"pytorch_model.bin": f"sha256:{SHA}", "config.json": f"git-sha1:{'d' * 40}"}
    _, (scan_out,) = lineage.ingest_datasets("scan_model", SOURCE, quarantine, SHA, returned)
    assert scan_out.name == quarantine and scan_out.digests["root_digest"] == SHA
    assert scan_out.digests["report_sha256"] == "9" * 64
    _, (registry,) = lineage.ingest_datasets("promote", SOURCE, quarantine, SHA, returned)
    assert (registry.namespace, registry.name, registry.version) == ("s3://bucket", "reg/models/demo/x/rev-1",
                                                                     "rev-1")
    assert registry.digests["signature_sha256"] == "1" * 64
    # The teardown drops the quarantine; it knows it only from what it returned (the records are gone).
    inputs, (dropped,) = lineage.ingest_datasets("remove_quarantine", None, None, None, {"quarantine": quarantine})
    assert inputs == [] and dropped.dropped and dropped.name == quarantine


def test_datasets_become_openlineage_datasets_with_digest_facets() -> None:
    class Task:
        def __init__(self) -> None:
            self.inlets: list = []
            self.outlets: list = []

    task = Task()
    inputs, outputs = lineage.ingest_datasets("promote", SOURCE, "/q/x", SHA, {
        "url": "file:///r/models/demo/x/1", "version": "1", "model": "demo/x", "aibom_sha256": "2" * 64})
    lineage.attach_openlineage(task, inputs, outputs)
    from openlineage.client.event_v2 import Dataset

    (inlet,), (outlet,) = task.inlets, task.outlets
    assert isinstance(inlet, Dataset) and isinstance(outlet, Dataset)
    assert outlet.namespace == "file" and outlet.name == "/r/models/demo/x/1"
    assert outlet.facets["version"].datasetVersion == "1"
    assert outlet.facets[lineage.DIGESTS_FACET].digests["aibom_sha256"] == "2" * 64
    from openlineage.client.serde import Serde

    serialized = Serde.to_dict(outlet)
    assert serialized["facets"][lineage.DIGESTS_FACET]["digests"]["aibom_sha256"] == "2" * 64
    dropped = lineage.quarantine_dataset("/q/x", dropped=True).to_openlineage()
    assert dropped.facets["lifecycleStateChange"].lifecycleStateChange.value == "DROP"
