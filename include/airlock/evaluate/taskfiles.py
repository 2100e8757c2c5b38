"""lm-eval task files: find them, check them, and lay down a per-evaluation copy with absolute paths.

lm-eval resolves ``dataset_kwargs.data_files`` against the process's working directory, and
``datasets`` caches local files by path and mtime (a rewritten JSONL with the same mtime would return
stale rows). So every evaluation gets its own directory: the YAML is rewritten to point at a copy of
the data inside it, by absolute path, and the digest of each copied file is recorded.

Task YAML here is data, not code: ``yaml.safe_load`` refuses lm-eval's ``!function`` tags, and keys
that make lm-eval import or run something (``include``, ``class``, ``custom_dataset``, unsafe code)
are refused, as are data files outside the task's own directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from airlock.errors import ConfigurationError

# Loaders that read local files through `datasets` without running any script.
LOCAL_DATASET_BUILDERS = frozenset({"json", "csv", "text", "parquet"})
# Keys that pull in other files or code, or opt into running model-written code.
REFUSED_KEYS = frozenset({"include", "class", "custom_dataset", "unsafe_code", "group", "task_list"})


@dataclass(frozen=True)
class TaskSource:
    name: str
    yaml_path: Path
    config: dict
    data_files: dict[str, tuple[Path, ...]]  # split -> absolute source paths


@dataclass(frozen=True)
class MaterializedTask:
    name: str
    yaml_path: Path  # the rewritten copy
    data_sha256: dict[str, str]  # "<split>/<i>" -> sha256 of the copied bytes


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigurationError(f"task file {path}: not plain YAML lm-eval can use safely ({reason})") from None
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise ConfigurationError(f"task file {path}: expected a mapping with a string 'task'")
    return data


def _check(path: Path, config: dict) -> dict[str, tuple[Path, ...]]:
    """The data files of a task config, as absolute paths inside its directory; refuse anything else."""
    refused = sorted(REFUSED_KEYS & set(config))
    if refused:
        raise ConfigurationError(f"task file {path}: key(s) {refused} are not allowed in Airlock task files")
    if config.get("dataset_path") not in LOCAL_DATASET_BUILDERS:
        raise ConfigurationError(
            f"task file {path}: dataset_path must be one of {sorted(LOCAL_DATASET_BUILDERS)} (local files only)"
        )
    kwargs = config.get("dataset_kwargs")
    if not isinstance(kwargs, dict) or set(kwargs) != {"data_files"} or not isinstance(kwargs["data_files"], dict):
        raise ConfigurationError(f"task file {path}: dataset_kwargs must hold exactly a data_files mapping")
    base = path.parent.resolve()
    files: dict[str, tuple[Path, ...]] = {}
    for split, value in kwargs["data_files"].items():
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigurationError(f"task file {path}: data_files.{split} must be a file name or a list of them")
        resolved = []
        for name in names:
            rel = PurePosixPath(name)
            if rel.is_absolute() or ".." in rel.parts or name != rel.as_posix():
                raise ConfigurationError(
                    f"task file {path}: data file {name!r} must be a relative path inside the task directory"
                )
            target = base / rel
            if target.is_symlink() or not target.is_file():
                raise ConfigurationError(f"task file {path}: data file {name!r} is missing or not a regular file")
            resolved.append(target)
        files[str(split)] = tuple(resolved)
    return files


def index_tasks(task_dirs: Iterable[str | Path]) -> dict[str, TaskSource]:
    """Every task YAML in ``task_dirs`` (non-recursive), by its ``task`` name; a name defined twice is an error."""
    found: dict[str, TaskSource] = {}
    for directory in task_dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigurationError(f"task directory {directory} does not exist")
        for yaml_path in sorted(directory.glob("*.yaml")):
            config = _load_yaml(yaml_path)
            name = config["task"]
            if name in found:
                raise ConfigurationError(
                    f"task {name!r} is defined twice: {found[name].yaml_path} and {yaml_path}"
                )
            found[name] = TaskSource(name, yaml_path, config, _check(yaml_path, config))
    return found


def resolve_task_files(task: str, task_dirs: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """(role, path) of the YAML and data files ``task`` is made of, in a stable order."""
    sources = index_tasks(task_dirs)
    if task not in sources:
        raise ConfigurationError(f"evaluation task {task!r} is not defined in {', '.join(map(str, task_dirs))}")
    source = sources[task]
    files = [("yaml", source.yaml_path)]
    for split in sorted(source.data_files):
        files.extend((f"data:{split}/{i}", p) for i, p in enumerate(source.data_files[split]))
    return files


def materialize(tasks: Iterable[str], task_dirs: Iterable[str | Path], dest: Path) -> dict[str, MaterializedTask]:
    """Write ``dest/tasks/<task>.yaml`` and ``dest/data/<task>/...`` for each task, paths absolute.

    ``dest/tasks`` is what ``TaskManager(include_path=...)`` gets; nothing else is in it, so lm-eval can
    only see the tasks asked for.
    """
    sources = index_tasks(task_dirs)
    out: dict[str, MaterializedTask] = {}
    (dest / "tasks").mkdir(parents=True, exist_ok=True)
    for name in tasks:
        if name not in sources:
            raise ConfigurationError(f"evaluation task {name!r} is not defined in the suite's task directories")
        source = sources[name]
        data_dir = (dest / "data" / name).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        data_files: dict[str, list[str]] = {}
        digests: dict[str, str] = {}
        for split, paths in source.data_files.items():
            data_files[split] = []
            for i, src in enumerate(paths):
                payload = src.read_bytes()  # one read: what is hashed is what is copied
                target = data_dir / f"{split}-{i}-{src.name}"
                target.write_bytes(payload)
                data_files[split].append(str(target))
                digests[f"{split}/{i}"] = hashlib.sha256(payload).hexdigest()
        config = dict(source.config)
        config["dataset_kwargs"] = {
            "data_files": {s: (v[0] if len(v) == 1 else v) for s, v in data_files.items()}
        }
        yaml_path = dest / "tasks" / f"{name}.yaml"
        yaml_path.write_text(yaml.safe_dump(config, sort_keys=True), encoding="utf-8")
        out[name] = MaterializedTask(name=name, yaml_path=yaml_path, data_sha256=digests)
    return out
