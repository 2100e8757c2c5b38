#!/usr/bin/env python3
"""Model proxy throughput: ``snapshot_download`` of 2 GiB through Airlock's proxy, through olah, and a plain read.

The model is 4 × 512 MiB safetensors files (random tensor bytes; sizes with
``--file-mib``/``--files``). In one run, on the same machine and the same bytes:

* **read**: the registry's stored files read sequentially (the floor nobody beats);
* **proxy cold**: a freshly started ``airlock proxy serve`` (its own process), the
  first ``snapshot_download``: index and signatures verified, every file hashed
  against ``model.sig`` before its first byte is sent, pull records written;
* **proxy warm**: the same proxy, a second client (fresh cache): verification
  cached per stored object, so only the transfer remains;
* **olah**: olah (the demo hub's, from the stack's olah venv) serving the same
  bytes as a git+LFS repository (``scripts/demo_hub.py``'s layout; offline mirror mode).

Every client is ``huggingface_hub.snapshot_download`` in a fresh interpreter
(``HF_ENDPOINT``), timed around the download call only, with an empty cache.
Throughput = bytes / seconds. Data lives under ``--work`` (default
``/tmp/airlock-proxy-bench``) and is removed at the end. Last line, exactly::

    proxy_vs_olah=<cold proxy / olah> proxy_vs_read=<cold proxy / read>

(the cold proxy figure includes verification; the warm ratios are printed above it).
Run it alone, niced: ``nice -n 10 .venv/bin/python bench/proxy_bench.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MIB = 1 << 20
MODEL = "demo/bench-2g"  # olah's demo config serves demo/* only

CLIENT = """
import json, sys, time
from huggingface_hub import snapshot_download
start = time.perf_counter()
path = snapshot_download(%(repo)r, revision=%(revision)r)
print(json.dumps({"seconds": time.perf_counter() - start, "path": path}))
"""


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _header(count: int) -> bytes:
    header = json.dumps({"weight": {"dtype": "U8", "shape": [count], "data_offsets": [0, count]}}).encode()
    return header + b" " * ((8 - len(header) % 8) % 8)  # the data starts 8-byte aligned, as safetensors writes it


def write_safetensors(path: Path, size: int) -> None:
    """A valid safetensors file of exactly ``size`` bytes: one U8 tensor of random bytes."""
    count = size - 8
    for _ in range(8):  # the header's length depends on the digits of the tensor size: settle it
        count = size - 8 - len(_header(count))
    header = _header(count)
    if 8 + len(header) + count != size:
        raise SystemExit(f"cannot lay out a safetensors file of exactly {size} bytes")
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(header)) + header)
        left = count
        while left:
            block = os.urandom(min(64 * MIB, left))
            out.write(block)
            left -= len(block)


def build_model(work: Path, files: int, file_mib: int) -> Path:
    model = work / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "bench", "note": "random bytes"}\n')
    for i in range(files):
        write_safetensors(model / f"model-{i + 1:05d}-of-{files:05d}.safetensors", file_mib * MIB)
    return model


def promote(work: Path, model_dir: Path) -> tuple[object, object, Path]:
    """Sign the model with a local key and promote it into a filesystem registry (what ingest ends with)."""
    from airlock.registry import FilesystemStore, HostState, Registry
    from airlock.signing import LocalKeySigner
    from tests.pull_fixtures import promote_signed
    from tests.signing_fixtures import trust_store_for

    signer = LocalKeySigner.generate(key_name="airlock-model-signing", version=1)
    trust = trust_store_for(signer)
    registry = Registry(FilesystemStore(work / "registry"), workers=4, signer=signer, trust=trust,
                        host_state=HostState(work / "writer-state"))
    extra = {p.name: p for p in sorted(model_dir.iterdir())}
    # promote_signed writes extra files from bytes; hand it the big files by path instead (no 2 GiB in memory).
    import tests.pull_fixtures as fixtures

    real_make = fixtures.make_model

    def make_model(root: Path, **_kwargs: object) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        for name, path in extra.items():
            os.link(path, root / name)  # same bytes, no copy
        return root

    fixtures.make_model = make_model
    try:
        promote_signed(registry, work, signer, model=MODEL, version="1")
    finally:
        fixtures.make_model = real_make
    trust_file = work / "trust.pem"
    trust_file.write_text(trust.dumps())
    return registry, signer, trust_file


def publish_lfs_repo(demo_hub: ModuleType, model_dir: Path, repo_dir: Path, digests: dict[str, str]) -> str:
    """``scripts/demo_hub.py``'s git+LFS layout (what olah's mirror mode reads), without holding 2 GiB in memory:
    the LFS objects are hard links to the model files, the pointers use the digests already known."""
    git = demo_hub._git
    repo_dir.mkdir(parents=True)
    git(repo_dir, "init", "--quiet", "--template=", f"--initial-branch={demo_hub.BRANCH}")
    patterns = demo_hub.lfs_patterns()
    entries = {".gitattributes": None, **{p.name: p for p in sorted(model_dir.iterdir())}}
    for name, path in entries.items():
        if path is None:
            data = demo_hub.HF_GITATTRIBUTES.encode()
        elif demo_hub.is_lfs_path(name, patterns):
            oid = digests[name]
            store = demo_hub.lfs_object_path(repo_dir, oid)
            store.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, store)
            data = f"version {demo_hub.LFS_POINTER_VERSION}\noid sha256:{oid}\nsize {path.stat().st_size}\n".encode()
        else:
            data = path.read_bytes()
        (repo_dir / name).write_bytes(data)
        blob = git(repo_dir, "hash-object", "-w", "--no-filters", "--stdin", stdin=data)
        git(repo_dir, "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}")
    commit = git(repo_dir, "commit-tree", git(repo_dir, "write-tree"), "-m", f"Publish {MODEL} (bench)")
    git(repo_dir, "update-ref", f"refs/heads/{demo_hub.BRANCH}", commit)
    git(repo_dir, "update-index", "--refresh", "-q")
    return commit


def plain_read(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        with path.open("rb", buffering=0) as reader:
            while reader.read(8 * MIB):
                pass
    return time.perf_counter() - start


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def download(endpoint: str, token: str | None, revision: str, hf_home: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1")
    if token:
        env["HF_TOKEN"] = token
    result = subprocess.run([sys.executable, "-c", CLIENT % {"repo": MODEL, "revision": revision}], env=env,
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"snapshot_download via {endpoint} failed:\n{result.stderr[-3000:]}")
    seconds = json.loads(result.stdout.strip().splitlines()[-1])["seconds"]
    shutil.rmtree(hf_home, ignore_errors=True)
    return seconds


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/airlock-proxy-bench"))
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--file-mib", type=int, default=512)
    parser.add_argument("--olah-venv", type=Path,
                        default=Path(os.environ.get("AIRLOCK_STATE_DIR", REPO / ".airlock")) / "olah-venv")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    olah_cli = args.olah_venv / "bin" / "olah-cli"
    if not olah_cli.exists():
        print(f"no olah at {olah_cli} (make stack-up installs it)", file=sys.stderr)
        return 2
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    servers: list[subprocess.Popen] = []
    try:
        return _run(args, olah_cli, servers)
    finally:
        for proc in servers:
            stop(proc)
        if not args.keep:
            subprocess.run(["chmod", "-R", "u+w", str(args.work)], check=False)
            shutil.rmtree(args.work, ignore_errors=True)


def _run(args: argparse.Namespace, olah_cli: Path, servers: list[subprocess.Popen]) -> int:
    from airlock.proxy.auth import add_consumer

    work = args.work
    t0 = time.perf_counter()
    model_dir = build_model(work, args.files, args.file_mib)
    total = sum(p.stat().st_size for p in model_dir.iterdir())
    registry, _signer, trust_file = promote(work, model_dir)
    print(f"model: {args.files} x {args.file_mib} MiB safetensors + config.json = {total / MIB:.0f} MiB "
          f"(built, signed and promoted in {time.perf_counter() - t0:.1f}s)")

    # olah: the same bytes as a git+LFS repo, served by a second olah of our own (the stack's stays untouched).
    demo_hub = _load("demo_hub")
    hub_root = work / "hub"
    digests = {o.key.removeprefix("files/"): o.sha256 for o in registry.released(MODEL, "1").plan.by_role("file")}
    publish_lfs_repo(demo_hub, model_dir, demo_hub.repo_git_dir(hub_root, MODEL), digests)
    for sub in ("olah-cache", "logs"):
        (hub_root / sub).mkdir(parents=True, exist_ok=True)
    olah_port = free_port()
    config = hub_root / "olah.toml"
    config.write_text(demo_hub.olah_config_text(hub_root, "127.0.0.1", olah_port))
    olah = subprocess.Popen([str(olah_cli), "-c", str(config), "--log-path", str(hub_root / "logs")], cwd=hub_root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    servers.append(olah)
    olah_url = f"http://127.0.0.1:{olah_port}"
    wait_http(f"{olah_url}/api/models/{MODEL}/revision/main", 90, olah)

    # The proxy, as its own process (`airlock proxy serve`), so its first request is really cold.
    tokens = work / "tokens.json"
    token = add_consumer(tokens, "bench")
    proxy_port = free_port()
    env = {**os.environ, "AIRLOCK_REGISTRY": str(work / "registry"), "AIRLOCK_TRUST_STORE": str(trust_file),
           "AIRLOCK_HOST_STATE": str(work / "proxy-state")}
    proxy = subprocess.Popen([str(Path(sys.executable).parent / "airlock"), "proxy", "serve", "--listen",
                              f"127.0.0.1:{proxy_port}", "--tokens", str(tokens)], env=env, cwd=work,
                             stdout=subprocess.DEVNULL, stderr=(work / "proxy.log").open("wb"),
                             start_new_session=True)
    servers.append(proxy)
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    wait_http(f"{proxy_url}/healthz", 60, proxy)

    stored = sorted((work / "registry" / "models" / MODEL / "1" / "files").iterdir())
    results: dict[str, float] = {}
    results["read"] = plain_read(stored)
    results["proxy cold"] = download(proxy_url, token, "1", work / "hf-proxy-cold")
    results["proxy warm"] = download(proxy_url, token, "1", work / "hf-proxy-warm")
    results["olah"] = download(olah_url, None, "main", work / "hf-olah")

    rate = {name: total / seconds / MIB for name, seconds in results.items()}
    for name, seconds in results.items():
        print(f"{name:11} {seconds:7.2f} s  {rate[name]:8.1f} MiB/s")
    print(f"warm: proxy_vs_olah={rate['proxy warm'] / rate['olah']:.2f} "
          f"proxy_vs_read={rate['proxy warm'] / rate['read']:.2f}")
    print(f"cold: proxy_vs_olah={rate['proxy cold'] / rate['olah']:.2f} "
          f"proxy_vs_read={rate['proxy cold'] / rate['read']:.2f}")
    cold = rate["proxy cold"]
    print(f"proxy_vs_olah={cold / rate['olah']:.2f} proxy_vs_read={cold / rate['read']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
