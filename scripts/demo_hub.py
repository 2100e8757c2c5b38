#!/usr/bin/env python3
"""Airlock's local Hugging Face-compatible demo hub: git+LFS repos served by olah.

The demo models (``scripts/demo_models.py``) are published as ordinary git
repositories with Git LFS pointers, in the layout that olah's *local mirror*
mode reads, and olah runs *offline* so it never talks to huggingface.co. Any
``huggingface_hub`` client pointed at it (``endpoint=`` or ``HF_ENDPOINT``) sees
real Hub semantics: commit shas, ``list_repo_tree`` with LFS sha256 and git blob
ids, ``snapshot_download`` at a pinned revision.

Layout under ``--root DIR`` (everything is rebuilt from scratch by ``build``)::

    DIR/models/<org>/<name>/                plain model directories (build_all output)
    DIR/mirrors/models/<org>/<name>/.git    published repos; olah ``mirrors-path`` = DIR/mirrors
    DIR/olah-cache/                         olah ``repos-path`` (its own cache; unused offline)
    DIR/logs/                               pass as ``--log-path`` (olah defaults to ./logs)
    DIR/hub-index.json                      {repo_id: {"commit": sha, "path": ...}}

Besides the demo models, the hub publishes ``demo/tampered-lfs``: tiny-gpt2's
files whose committed LFS pointer names the true sha256 of ``model.safetensors``
while the LFS object olah serves has one byte flipped (same size) -- what a
hub whose storage was altered after the commit looks like. Airlock's
published-checksum check must block it, naming ``model.safetensors``.

How olah finds things (olah 0.5.4, ``olah/mirror/repos.py``): a repo is
``<mirrors-path>/<repo_type>/<org>/<name>`` opened with GitPython; revisions
resolve with ``git rev-parse`` (so branch ``main`` must exist); a blob between
121 and 149 bytes that matches the LFS pointer regex is an LFS file whose bytes
are read from ``<working dir>/.git/lfs/objects/<oid[0:2]>/<oid[2:4]>/<oid>``
-- the standard git-lfs local store. Hence the repos are non-bare, with the
pointer files checked out, and the LFS store written directly; the ``git-lfs``
binary is not needed.

Determinism: files are added with git plumbing (``hash-object --no-filters``,
``update-index --cacheinfo 100644``), so neither umask, user git config nor an
installed git-lfs filter can change a blob; author, committer, dates and the
message are fixed, so the commit sha depends only on the model bytes.

Commands::

    python scripts/demo_hub.py build --root DIR
        Build the models and the repos; prints ``<repo id> <commit sha>`` lines.
    python scripts/demo_hub.py olah-config --root DIR --host 127.0.0.1 --port 8090 --out DIR/olah.toml
        Write olah's config (offline, local mirrors, demo/* only). Stdlib only.

Run olah (from the olah venv installed with ``requirements-olah.txt``)::

    <olah-venv>/bin/olah-cli -c DIR/olah.toml --log-path DIR/logs

Host and port come from the config file (olah ignores ``--host/--port`` when
``-c`` is given); without ``--log-path`` olah writes ``./logs`` in its working
directory. Readiness: ``GET http://HOST:PORT/api/models/demo/tiny-gpt2/revision/main``
returns 200 with JSON whose ``sha`` is the commit of ``main`` once the repos are
served. Do not poll ``GET /``: olah 0.5.4's index page answers 500 with the
pinned Starlette (its template call uses a removed signature).

olah quirks that clients must respect (observed with olah 0.5.4 offline):

* Always pass a ``revision`` (a commit sha, or ``main``). ``HfApi.model_info(repo)``
  without one hits ``/api/models/<repo>`` which, offline, never consults the
  local mirror and answers 401 (RepositoryNotFoundError). ``repo_info(...,
  revision="main")``, ``list_repo_tree``, ``get_paths_info``, ``hf_hub_download``
  and ``snapshot_download`` all work; pinning the sha is what Airlock does anyway.
* ``/api/models/<repo>/tree/<rev>`` answers 307 to ``.../tree/<rev>/``;
  huggingface_hub follows it transparently.
* Only ``demo/*`` repos exist; any other id is a 401/404, never an upstream fetch.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

BRANCH = "main"
TAMPERED_LFS = "demo/tampered-lfs"
DERIVED_FP16 = "demo/tiny-gpt2-fp16"  # the fp16 cast of demo/tiny-gpt2 (scripts/demo_derived.py)
TAMPERED_FILE = "model.safetensors"
LFS_POINTER_VERSION = "https://git-lfs.github.com/spec/v1"

# Fixed identity and time (2024-06-01T00:00:00Z) so commit shas are reproducible.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Airlock Demo Hub",
    "GIT_AUTHOR_EMAIL": "demo-hub@airlock.invalid",
    "GIT_AUTHOR_DATE": "1717200000 +0000",
    "GIT_COMMITTER_NAME": "Airlock Demo Hub",
    "GIT_COMMITTER_EMAIL": "demo-hub@airlock.invalid",
    "GIT_COMMITTER_DATE": "1717200000 +0000",
}

# The .gitattributes huggingface.co puts in every new model repo.
HF_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""


# --------------------------------------------------------------------------- layout


def models_dir(root: Path) -> Path:
    return root / "models"


def mirrors_dir(root: Path) -> Path:
    return root / "mirrors"


def repo_git_dir(root: Path, repo_id: str) -> Path:
    """Where olah looks for ``repo_id``: ``<mirrors-path>/models/<org>/<name>``."""
    return mirrors_dir(root) / "models" / repo_id


def index_path(root: Path) -> Path:
    return root / "hub-index.json"


# --------------------------------------------------------------------------- LFS


def lfs_patterns(gitattributes: str = HF_GITATTRIBUTES) -> list[str]:
    """Patterns whose attributes include ``filter=lfs``."""
    patterns = []
    for line in gitattributes.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            patterns.append(fields[0])
    return patterns


def is_lfs_path(path: str, patterns: list[str]) -> bool:
    """gitattributes matching, enough for HF's rules: slash-less patterns match the basename."""
    basename = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatchcase(path, pattern.replace("**/", "*")):
                return True
        elif fnmatch.fnmatchcase(basename, pattern):
            return True
    return False


def lfs_pointer(data: bytes) -> tuple[str, bytes]:
    """Return (sha256 oid, pointer bytes) in the exact form git-lfs writes and olah's regex expects."""
    oid = hashlib.sha256(data).hexdigest()
    pointer = f"version {LFS_POINTER_VERSION}\noid sha256:{oid}\nsize {len(data)}\n"
    return oid, pointer.encode("ascii")


def lfs_object_path(repo_dir: Path, oid: str) -> Path:
    """git-lfs local store path, which olah reads directly."""
    return repo_dir / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def git_blob_sha1(data: bytes) -> str:
    """The object id git (and the Hub's ``blob_id``) gives to ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --------------------------------------------------------------------------- git


def _git_env() -> dict[str, str]:
    """Environment isolated from system/global git config, with the fixed identity."""
    env = dict(os.environ)
    env.update(GIT_IDENTITY)
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"})
    return env


def _git(repo_dir: Path, *args: str, stdin: bytes | None = None) -> str:
    """Run git in ``repo_dir`` and return stripped stdout; raise with stderr on failure."""
    result = subprocess.run(
        ["git", "-C", str(repo_dir), *args],
        input=stdin,
        capture_output=True,
        env=_git_env(),
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo_dir}: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode().strip()


def _repo_files(model_dir: Path) -> dict[str, bytes]:
    """All files to commit (POSIX relative path -> bytes), with HF's .gitattributes added."""
    files = {p.relative_to(model_dir).as_posix(): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
    files.setdefault(".gitattributes", HF_GITATTRIBUTES.encode())
    return dict(sorted(files.items()))


def _stage_file(repo_dir: Path, path: str, data: bytes, patterns: list[str]) -> None:
    """Write ``path`` to the work tree and index, as a pointer + LFS object when the rules say LFS."""
    if is_lfs_path(path, patterns):
        oid, data_in_git = lfs_pointer(data)
        store = lfs_object_path(repo_dir, oid)
        store.parent.mkdir(parents=True, exist_ok=True)
        store.write_bytes(data)
    else:
        data_in_git = data
    worktree_file = repo_dir / path
    worktree_file.parent.mkdir(parents=True, exist_ok=True)
    worktree_file.write_bytes(data_in_git)
    blob = _git(repo_dir, "hash-object", "-w", "--no-filters", "--stdin", stdin=data_in_git)
    _git(repo_dir, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")


def publish_repo(
    model_dir: Path, repo_dir: Path, repo_id: str, alter: Callable[[Path], None] | None = None
) -> str:
    """Create ``repo_dir`` as a one-commit git+LFS repo of ``model_dir`` on branch main; return the sha.

    Built in a sibling temp dir and swapped in, so a running olah never sees a
    half-written repo and a re-run replaces the old one completely. ``alter``
    runs on the staged repo after the commit (the tampered demo uses it).
    """
    staging = repo_dir.with_name(f".{repo_dir.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _git(staging, "init", "--quiet", "--template=", f"--initial-branch={BRANCH}")
    patterns = lfs_patterns()
    for path, data in _repo_files(model_dir).items():
        _stage_file(staging, path, data, patterns)
    tree = _git(staging, "write-tree")
    commit = _git(staging, "commit-tree", tree, "-m", f"Publish {repo_id} (Airlock demo model)")
    _git(staging, "update-ref", f"refs/heads/{BRANCH}", commit)
    _git(staging, "update-index", "--refresh", "-q")  # record stat info so `git status` is clean
    if alter is not None:
        alter(staging)

    retired = repo_dir.with_name(f".{repo_dir.name}.retired")
    shutil.rmtree(retired, ignore_errors=True)
    if repo_dir.exists():
        repo_dir.rename(retired)
    staging.rename(repo_dir)
    shutil.rmtree(retired, ignore_errors=True)
    return commit


# --------------------------------------------------------------------------- build


def _load_script(name: str) -> ModuleType:
    """Import a sibling script by path, so this works as a script or loaded by path in tests."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load_demo_models() -> ModuleType:
    return _load_script("demo_models")


TAMPERED_CARD = f"""---
license: apache-2.0
tags:
- airlock-demo
---

# {TAMPERED_LFS}

The files of `demo/tiny-gpt2`, published so that the LFS pointer committed for
`{TAMPERED_FILE}` names its true sha256 while the stored LFS object has one
byte flipped: a hub whose storage was altered after the commit. Downloads get
the altered bytes; a client that checks the published sha256 must refuse them.

Intended use: tests and demos of supply-chain controls. Not for any real task.
"""


def flip_lfs_byte(repo_dir: Path, path: str = TAMPERED_FILE) -> None:
    """Flip one byte of ``path``'s stored LFS object, leaving the committed pointer (and the size) as they are."""
    pointer = (repo_dir / path).read_text()
    oid = pointer.split("oid sha256:", 1)[1].split()[0]
    store = lfs_object_path(repo_dir, oid)
    data = bytearray(store.read_bytes())
    data[len(data) // 2] ^= 0xFF  # tensor bytes, not the safetensors header: the file still parses
    store.write_bytes(bytes(data))


def build_tampered_model(tiny_gpt2_dir: Path, out_dir: Path) -> Path:
    """tiny-gpt2's files under ``out_dir/demo/tampered-lfs`` with a model card that says what it is."""
    target = out_dir / TAMPERED_LFS
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(tiny_gpt2_dir, target)
    (target / "README.md").write_text(TAMPERED_CARD)
    return target


def build_hub(root: Path) -> dict[str, str]:
    """Build the demo models and publish each as a git repo under ``root``; return ``{repo_id: commit}``."""
    root = root.resolve()
    demo_models = _load_demo_models()
    built = demo_models.build_all(models_dir(root))
    commits = {repo_id: publish_repo(path, repo_git_dir(root, repo_id), repo_id) for repo_id, path in built.items()}
    tampered = build_tampered_model(built[demo_models.TINY_GPT2], models_dir(root))
    commits[TAMPERED_LFS] = publish_repo(
        tampered, repo_git_dir(root, TAMPERED_LFS), TAMPERED_LFS, alter=flip_lfs_byte
    )
    demo_derived = _load_script("demo_derived")
    derived_dir, _record = demo_derived.build_fp16(built[demo_models.TINY_GPT2], models_dir(root))
    commits[DERIVED_FP16] = publish_repo(derived_dir, repo_git_dir(root, DERIVED_FP16), DERIVED_FP16)
    index = {repo_id: {"commit": sha, "path": str(repo_git_dir(root, repo_id))} for repo_id, sha in commits.items()}
    index_path(root).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    for sub in ("olah-cache", "logs"):
        (root / sub).mkdir(exist_ok=True)
    return commits


# --------------------------------------------------------------------------- olah config


def _toml_str(value: str) -> str:
    """A TOML basic string; JSON's escapes (\\", \\\\, \\n, \\uXXXX) are all valid TOML."""
    return json.dumps(value)


def olah_config_text(root: Path, host: str, port: int) -> str:
    """olah 0.5.4 config: offline, serve local mirrors, and only ``demo/*`` repos.

    ``offline = true`` stops every upstream call (health pings, metadata,
    files); the proxy rules make any other repo id a 404 instead of a lookup.
    """
    root = root.resolve()
    netloc = f"{host}:{port}"
    lines = [
        "# Generated by scripts/demo_hub.py olah-config -- Airlock demo hub (olah, offline).",
        f"# Run: olah-cli -c <this file> --log-path {root / 'logs'}",
        "[basic]",
        f"host = {_toml_str(host)}",
        f"port = {int(port)}",
        'ssl-key = ""',
        'ssl-cert = ""',
        f"repos-path = {_toml_str(str(root / 'olah-cache'))}",
        f"mirrors-path = [{_toml_str(str(mirrors_dir(root)))}]",
        'mirror-scheme = "http"',
        f"mirror-netloc = {_toml_str(netloc)}",
        f"mirror-lfs-netloc = {_toml_str(netloc)}",
        "",
        "[accessibility]",
        "offline = true",
        "",
        "[[accessibility.proxy]]",
        'repo = "demo/*"',
        "allow = true",
        "",
        "[[accessibility.cache]]",
        'repo = "demo/*"',
        "allow = true",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def _cmd_build(args: argparse.Namespace) -> int:
    for repo_id, sha in build_hub(args.root).items():
        print(f"{repo_id} {sha}")
    return 0


def _cmd_olah_config(args: argparse.Namespace) -> int:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(olah_config_text(args.root, args.host, args.port))
    print(args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Airlock demo hub: git+LFS demo repos served by olah.")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="build demo models and their git+LFS repos under --root")
    build.add_argument("--root", type=Path, required=True)
    build.set_defaults(func=_cmd_build)

    config = sub.add_parser("olah-config", help="write the olah config toml")
    config.add_argument("--root", type=Path, required=True)
    config.add_argument("--host", default="127.0.0.1")
    config.add_argument("--port", type=int, default=8090)
    config.add_argument("--out", type=Path, required=True)
    config.set_defaults(func=_cmd_olah_config)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
