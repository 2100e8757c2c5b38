#!/usr/bin/env python3
"""What ``model_ingest``'s data stages cost, in units of (one copy + one hash) of the same drop (issue #13).

Builds once (reused) a 2 GiB ``file://`` drop under ``<state>/bench/pipeline-drop``: 4 safetensors shards of
512 MiB (valid headers, one U8 tensor each) and small config files (no ``model_type``: not a transformers model,
so evaluation and the fingerprint are skipped as they are for any such model). Then, in one process:

1. warms the page cache (the issue's measurement is page-cache warm) and times ``cp -r`` of the drop and one
   parallel sha256 pass over it (one thread per usable core): the baseline ``copy + hash``;
2. after a warm-up run on a tiny drop (Airflow's in-process start-up stays out of the numbers), runs
   ``model_ingest`` on the drop with ``dag.test()`` against the local stack (Vault for signing, as
   tests/integration/test_model_ingest_dag.py does), tier low, a filesystem registry in a fresh directory beside
   the quarantine (same filesystem), and reads every task's duration from Airflow's task instances;
3. with ``--s3``, runs it again with an S3 registry on the stack's S3 server (moto) and prints that ratio too.

A drop has no name of its own, so its first release needs a human; the bench seeds each fresh registry with a
tiny released version of ``bench/pipeline`` from the same drop (signed index, owner ``bench``), so the measured
run is a later version of a known model and needs none.

Prints each stage's seconds; the last line is exactly
``data_stages_vs_copy_hash=<x.xx> wall_vs_copy_hash=<x.xx>`` (data stages: resolve + download + verify +
hash_manifest + scan + promote). Big temporary data (copies, quarantines, registries) is removed at the end;
``--clean`` also removes the drop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "include"))

MiB = 1024**2
SHARDS = 4
SHARD_BYTES = 512 * MiB
WRITE_BLOCK = 64 * MiB
DATA_STAGES = ("resolve_source", "download_to_quarantine", "verify_published_checksums", "hash_manifest",
               "scan_model", "promote")
MODEL = "bench/pipeline"
CONFIGS = {
    "config.json": {"architectures": ["BenchModel"], "hidden_size": 4096, "num_hidden_layers": 32},
    "generation_config.json": {"do_sample": False, "max_new_tokens": 16},
    "tokenizer_config.json": {"model_max_length": 4096, "padding_side": "left"},
    "model.safetensors.index.json": {
        "weight_map": {f"shard.{i}": f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors" for i in range(SHARDS)}
    },
}


def state_dir() -> Path:
    return Path(os.environ.get("AIRLOCK_STATE_DIR", REPO / ".airlock")).expanduser().resolve()


def load_stack_env() -> None:
    """The stack's addresses and tokens (``<state>/env``) and the ``airlock_vault`` connection, as the tests do."""
    env_file = state_dir() / "env"
    if not env_file.exists():
        sys.exit(f"{env_file} missing: start the local stack (make stack-up)")
    for line in env_file.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            os.environ.setdefault(key, shlex.split(value)[0] if value else "")
    approle = state_dir() / "secrets" / "vault-approle.json"
    from urllib.parse import urlsplit

    credentials = json.loads(approle.read_text())
    parts = urlsplit(os.environ["AIRLOCK_VAULT_ADDR"])
    os.environ["AIRFLOW_CONN_AIRLOCK_VAULT"] = json.dumps({
        "conn_type": "vault", "host": parts.hostname, "port": parts.port, "schema": parts.scheme,
        "login": credentials["role_id"], "password": credentials["secret_id"], "extra": {"auth_type": "approle"},
    })
    # The bench's own Airflow home and SQLite DB: never the stack's, never the tests'.
    home = state_dir() / "bench" / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__OPENLINEAGE__DISABLED": "True",
        "AIRLOCK_ENV": "development",
    })
    os.environ.pop("AIRLOCK_FILE_DROP_ROOTS", None)


# --------------------------------------------------------------------------- the drop


def safetensors_header(size: int) -> bytes:
    """A header (length prefix included) for one U8 tensor that fills a file of ``size`` bytes exactly."""
    n = 64
    while True:
        data_len = size - 8 - n
        body = json.dumps({"__metadata__": {"format": "pt"},
                           "weight": {"dtype": "U8", "shape": [data_len], "data_offsets": [0, data_len]}},
                          separators=(",", ":")).encode()
        if len(body) <= n:
            return struct.pack("<Q", n) + body.ljust(n, b" ")
        n = (len(body) + 7) // 8 * 8


def build_drop(root: Path, shard_bytes: int = SHARD_BYTES) -> Path:
    shards = [root / f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors" for i in range(SHARDS)]
    if all(p.is_file() and p.stat().st_size == shard_bytes for p in shards) and all(
            (root / name).is_file() for name in CONFIGS):
        return root
    root.mkdir(parents=True, exist_ok=True)
    print(f"building the drop in {root} ({SHARDS} x {shard_bytes // MiB} MiB safetensors)", flush=True)
    for shard in shards:
        tmp = shard.with_suffix(".tmp")
        header = safetensors_header(shard_bytes)
        with tmp.open("wb") as handle:
            handle.write(header)
            left = shard_bytes - len(header)
            while left:
                block = os.urandom(min(WRITE_BLOCK, left))
                handle.write(block)
                left -= len(block)
        tmp.replace(shard)
    for name, content in CONFIGS.items():
        (root / name).write_text(json.dumps(content, indent=2) + "\n")
    return root


def read_all(root: Path) -> None:
    buffer = bytearray(8 * MiB)
    for path in sorted(root.iterdir()):
        with path.open("rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


# --------------------------------------------------------------------------- the baseline


def cpu_seconds(who: int | None = None) -> float:
    """User + system CPU seconds of this process (or of its waited-for children): robust to a busy machine."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF if who is None else who)
    return usage.ru_utime + usage.ru_stime


CPU: dict[str, float] = {}


def time_copy(drop: Path, scratch: Path) -> float:
    import resource

    target = scratch / f"cp-{uuid.uuid4().hex[:8]}"
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(drop), str(target)], check=True)
    elapsed = time.perf_counter() - start
    CPU["copy"] = min(CPU.get("copy", float("inf")), cpu_seconds(resource.RUSAGE_CHILDREN) - cpu)
    shutil.rmtree(target)
    return elapsed


def time_hash(drop: Path) -> float:
    from airlock.manifest import usable_cores

    def one(path: Path) -> str:
        hasher = hashlib.sha256()
        buffer = bytearray(MiB)
        view = memoryview(buffer)
        with path.open("rb", buffering=0) as handle:
            while count := handle.readinto(buffer):
                hasher.update(view[:count])
        return hasher.hexdigest()

    files = sorted(drop.iterdir(), key=lambda p: p.stat().st_size, reverse=True)
    cpu = cpu_seconds()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        list(pool.map(one, files))
    elapsed = time.perf_counter() - start
    CPU["hash"] = min(CPU.get("hash", float("inf")), cpu_seconds() - cpu)
    return elapsed


# --------------------------------------------------------------------------- the pipeline


def seed_registry(drop: Path, scratch: Path) -> None:
    """A tiny released version of MODEL from this drop, owner ``bench``: the model's record for the measured run."""
    from airlock.connections import s3_access
    from airlock.ingest import pipeline_registry
    from airlock.manifest import manifest_for_directory
    from airlock.registry import PromotionRequest
    from airlock.signing import VaultTransitSigner

    seed = scratch / f"seed-{uuid.uuid4().hex[:8]}"
    (seed / "files").mkdir(parents=True)
    (seed / "files" / "config.json").write_text("{}\n")
    (seed / "model.sig").write_text("{}\n")
    (seed / "aibom.cdx.json").write_text("{}\n")
    manifest = manifest_for_directory(seed / "files")
    registry = pipeline_registry(lambda: s3_access().client(), VaultTransitSigner.from_airflow_connection())
    registry.promote(PromotionRequest(
        model=MODEL, version="seed", model_dir=seed / "files", files=manifest.files, root_digest=manifest.root_digest,
        signature=seed / "model.sig", aibom=seed / "aibom.cdx.json", owner="bench", risk_tier="low",
        approver="bench-seed", source=drop.as_uri(), actor="bench"))
    shutil.rmtree(seed)


def task_seconds(dag_run) -> dict[str, float]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id))
        return {ti.task_id: (ti.end_date - ti.start_date).total_seconds() for ti in rows
                if ti.start_date and ti.end_date}


def run_ingest(drop: Path, scratch: Path, registry: str) -> tuple[dict[str, float], float, str]:
    from airflow.dag_processing.dagbag import DagBag

    os.environ["AIRLOCK_QUARANTINE_ROOT"] = str(scratch / "quarantine")
    os.environ["AIRLOCK_REGISTRY"] = registry
    seed_registry(drop, scratch)
    dag = DagBag(dag_folder=str(REPO / "dags" / "model_ingest.py")).dags["model_ingest"]
    import resource

    read_all(drop)
    cpu = cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    dag_run = dag.test(run_conf={"source": drop.as_uri(), "revision": None, "owner": "bench", "risk_tier": "low",
                                 "registry_name": MODEL})
    wall = time.perf_counter() - start
    CPU["run"] = cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    seconds = task_seconds(dag_run)
    state = str(getattr(dag_run.state, "value", dag_run.state))
    return seconds, wall, state


def report(label: str, seconds: dict[str, float], wall: float, baseline: float) -> tuple[float, float]:
    data = sum(seconds.get(stage, 0.0) for stage in DATA_STAGES)
    for task, value in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"  {label} {task:<28} {value:7.2f} s")
    print(f"  {label} data stages {data:.2f} s, wall {wall:.2f} s")
    return data / baseline, wall / baseline


def make_bucket() -> str:
    from airlock.connections import s3_access_from_env

    bucket = f"airlock-bench-{uuid.uuid4().hex[:8]}"
    s3_access_from_env().client().create_bucket(Bucket=bucket)
    return bucket


def empty_bucket(bucket: str) -> None:
    from airlock.connections import s3_access_from_env

    client = s3_access_from_env().client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=bucket)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drop", type=Path, default=state_dir() / "bench" / "pipeline-drop")
    parser.add_argument("--s3", action="store_true", help="also run with an S3 registry on the stack's S3 server")
    parser.add_argument("--clean", action="store_true", help="remove the drop too at the end")
    parser.add_argument("--shard-mib", type=int, default=SHARD_BYTES // MiB, help="shard size (smoke runs)")
    args = parser.parse_args(argv)

    load_stack_env()
    drop = build_drop(args.drop.resolve(), args.shard_mib * MiB)
    scratch = state_dir() / "bench" / f"run-{uuid.uuid4().hex[:8]}"  # same filesystem as the quarantine
    scratch.mkdir(parents=True)
    try:
        from airflow.utils import db

        db.initdb()
        read_all(drop)
        copy_s = min(time_copy(drop, scratch) for _ in range(2))
        hash_s = min(time_hash(drop) for _ in range(2))
        baseline = copy_s + hash_s
        print(f"baseline: cp -r {copy_s:.2f} s + parallel sha256 {hash_s:.2f} s = {baseline:.2f} s")

        # The first task of the first dag.test() in a process starts Airflow's in-process execution API (~30 s
        # here): a warm-up run on a tiny drop keeps that out of the measured stages.
        tiny = scratch / "warmup-drop"
        tiny.mkdir()
        (tiny / "config.json").write_text("{}\n")
        (tiny / "model.safetensors").write_bytes(safetensors_header(4096) + bytes(4096 - len(safetensors_header(4096))))
        run_ingest(tiny, scratch / "warmup", str(scratch / "warmup" / "registry"))
        shutil.rmtree(scratch / "warmup", ignore_errors=True)

        s3_line = None
        if args.s3:
            bucket = make_bucket()
            try:
                s3_seconds, s3_wall, s3_state = run_ingest(drop, scratch / "s3", f"s3://{bucket}/registry")
            finally:
                empty_bucket(bucket)  # moto keeps objects in memory and temporary files
            s3_data, s3_total = report("s3", s3_seconds, s3_wall, baseline)
            s3_line = f"s3_registry ({s3_state}): data_stages_vs_copy_hash={s3_data:.2f} wall_vs_copy_hash={s3_total:.2f}"
            print(s3_line, flush=True)
        seconds, wall, state = run_ingest(drop, scratch / "fs", str(scratch / "fs" / "registry"))
        data_ratio, wall_ratio = report("fs", seconds, wall, baseline)
        print(f"model_ingest run: {state}")
        # Wall times swing with whatever else the machine runs; CPU seconds do not (every task runs in-process).
        print(f"cpu seconds: copy+hash {CPU['copy'] + CPU['hash']:.2f}, whole model_ingest run {CPU['run']:.2f} "
              f"(all tasks, Airflow's own work included)")
        if state != "success":
            print("the run did not succeed; the ratios are not meaningful", file=sys.stderr)
        if s3_line:
            print(s3_line)
        print(f"data_stages_vs_copy_hash={data_ratio:.2f} wall_vs_copy_hash={wall_ratio:.2f}")
        return 0 if state == "success" else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if args.clean:
            shutil.rmtree(drop, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
