"""The loaders as the oracle: which globals would torch, joblib, numpy and pickle import from a file?

Airlock's scanner claims to parse every container as the loaders do. This module asks the
loaders themselves: it runs ``torch.load(weights_only=False, pickle_module=...)``,
``joblib.load``, ``np.load(allow_pickle=True)`` (every ``.npz`` member read) and ``pickle.load``
on each file, in a child process, with every unpickler's ``find_class`` replaced by a recorder.
Nothing from the file ever runs:

* a global on Airlock's allowlist resolves to the real object (the loaders need the real
  ``NumpyArrayWrapper`` to read joblib's raw array bytes, the real ``OrderedDict`` ...). A call
  to one of those that fails on the stand-ins below returns a stand-in instead of aborting, so
  the walk reaches the globals after it (calls never move the stream, so this cannot make the
  loader read bytes it would not read);
* any other global is recorded and replaced by an inert stand-in class, so the load goes on
  and every later global is recorded too;
* torch's ``persistent_load`` (storage records) is wrapped the same way: a broken storage
  reference returns a stand-in rather than ending the walk;
* a ``sys.addaudithook`` hook is the safety net: a ``pickle.find_class`` that did not come
  through the recorder (an unpickler the recorder missed) is recorded and aborted, and process,
  network and ctypes events abort the load.

The child runs with a fresh temporary working directory, ``TMPDIR`` inside it, an address-space
limit, a per-loader time limit (SIGALRM) and no network (the audit hook refuses ``socket.*``).
Results stream back one JSON line per file, so a file that kills or hangs the child is charged
to that file and the rest of the batch goes on in a new child.

Used by ``tests/unit/test_scan_oracle_fuzz.py`` and ``bench/scan_fuzz_bench.py`` through
``tests/scan_fuzz.py``; the parent side needs no torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOADERS = ("torch", "joblib", "numpy", "pickle")
# A pseudo-global recorded when torch.load hands a zip to torch.jit.load (TorchScript runs code
# in its own interpreter, outside any find_class): never on the allowlist.
TORCHSCRIPT_DISPATCH = "torch.jit.load"

DEFAULT_LOADER_TIMEOUT_S = 5.0
DEFAULT_MEMORY_LIMIT = 4 << 30


@dataclass
class LoaderResult:
    """What one loader did with one file."""

    loader: str
    globals: list[str] = field(default_factory=list)  # "module.name" as the loader asked for it, in order
    error: str | None = None  # the exception the load ended with; None = it returned an object
    timed_out: bool = False
    tolerated: int = 0  # stand-ins returned for failed allowlisted calls / storage loads
    unhooked: list[str] = field(default_factory=list)  # find_class calls that bypassed the recorder
    # Globals the loader asked for that cannot be imported here (no such module, or an imported
    # module without that attribute): the loader raises there, as the recorder then does.
    unresolvable: list[str] = field(default_factory=list)
    blocked_events: list[str] = field(default_factory=list)  # audit events the safety net refused

    @property
    def opened(self) -> bool:
        """The loader parsed the file far enough to import a global, or loaded it outright."""
        return self.error is None or bool(self.globals) or bool(self.unhooked)

    def reached(self) -> list[str]:
        """Globals the loader resolved (allowlisted ones, or stand-ins for ones that could be imported)."""
        return [g for g in self.globals if g not in self.unresolvable] + [g for g in self.unhooked if g not in self.globals]

    @classmethod
    def from_json(cls, loader: str, data: dict[str, Any]) -> LoaderResult:
        return cls(
            loader=loader,
            globals=list(data.get("globals", [])),
            error=data.get("error"),
            timed_out=bool(data.get("timed_out", False)),
            tolerated=int(data.get("tolerated", 0)),
            unhooked=list(data.get("unhooked", [])),
            unresolvable=list(data.get("unresolvable", [])),
            blocked_events=list(data.get("blocked_events", [])),
        )


@dataclass
class OracleResult:
    """Every loader's result for one file; ``crashed`` when the file killed or hung the child."""

    path: str
    loaders: dict[str, LoaderResult] = field(default_factory=dict)
    crashed: str | None = None

    @property
    def opened(self) -> bool:
        return any(r.opened for r in self.loaders.values())

    def outside(self, allowed: set[tuple[str, str]]) -> dict[str, list[str]]:
        """``loader -> globals it reached that are not on the allowlist`` (loaders with none left out)."""
        found: dict[str, list[str]] = {}
        for name, result in self.loaders.items():
            bad = [g for g in result.reached() if not is_allowed(g, allowed)]
            if result.blocked_events:
                bad += [f"<audit:{e}>" for e in result.blocked_events]
            if bad:
                found[name] = bad
        return found


def is_allowed(qualified: str, allowed: set[tuple[str, str]]) -> bool:
    """``qualified`` is ``module.name`` as recorded; the allowlist holds ``(module, name)`` pairs."""
    if qualified == TORCHSCRIPT_DISPATCH:
        return False
    module, sep, name = qualified.partition(":")
    if not sep:  # recorded without the separator: cannot be split reliably, so never allowed
        return False
    return (module, name) in allowed


def airlock_allowlist() -> set[tuple[str, str]]:
    from airlock.scan.allowlist import ALLOWED_GLOBALS

    return set(ALLOWED_GLOBALS)


# --------------------------------------------------------------------------- parent side


def run_oracle(
    paths: Sequence[str | Path],
    *,
    allowed: Iterable[tuple[str, str]] | None = None,
    python: str | None = None,
    loader_timeout_s: float = DEFAULT_LOADER_TIMEOUT_S,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    loaders: Sequence[str] = LOADERS,
    deadline: float | None = None,
) -> dict[str, OracleResult]:
    """Run every loader on every path in as few child processes as possible; one result per path.

    With ``deadline`` (a ``time.monotonic()`` value) the child is stopped then and the paths it
    did not reach are left out of the result.
    """
    allow = sorted(set(allowed) if allowed is not None else airlock_allowlist())
    pending = [str(p) for p in paths]
    results: dict[str, OracleResult] = {}
    while pending and (deadline is None or time.monotonic() < deadline):
        done, culprit, reason = _run_child(pending, allow, python, loader_timeout_s, memory_limit, loaders, deadline)
        for result in done:
            results[result.path] = result
        finished = len(done)
        if culprit is None:  # all done, or the deadline passed
            pending = pending[finished:]
            if finished == 0:
                break
            continue
        results[culprit] = OracleResult(culprit, crashed=reason)  # it killed or hung the child: a new one goes on
        pending = pending[finished + 1 :]
    return results


_READY = {"ready": True}
STARTUP_TIMEOUT_S = 180.0  # importing torch on a loaded CI machine


class OracleUnavailable(RuntimeError):
    """The oracle child could not start (a broken environment, not a verdict on any file)."""


def _run_child(
    paths: list[str],
    allow: list[tuple[str, str]],
    python: str | None,
    loader_timeout_s: float,
    memory_limit: int,
    loaders: Sequence[str],
    deadline: float | None = None,
) -> tuple[list[OracleResult], str | None, str | None]:
    """One child over ``paths``; returns the results it streamed, and the path it died on (if it did)."""
    workdir = Path(tempfile.mkdtemp(prefix="airlock-oracle-"))
    try:
        request, out, errors, cwd = (workdir / n for n in ("request.json", "results.jsonl", "stderr", "cwd"))
        cwd.mkdir()
        request.write_text(
            json.dumps({
                "paths": paths,
                "allowed": allow,
                "loader_timeout_s": loader_timeout_s,
                "memory_limit": memory_limit,
                "loaders": list(loaders),
            })
        )
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update({
            "TMPDIR": str(cwd), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        })  # fmt: skip
        per_file = loader_timeout_s * len(loaders) + 5.0  # every loader may use its time limit
        with open(errors, "wb") as stderr:
            proc = subprocess.Popen(
                [python or sys.executable, str(Path(__file__).resolve()), "--child", str(request), str(out)],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            reason = _watch(proc, out, per_file, deadline)
        done = _read_results(out)
        if not _started(out):
            if reason == "deadline":
                return [], None, None
            tail = errors.read_bytes().decode("utf-8", "replace")[-2000:]
            raise OracleUnavailable(f"oracle child did not start ({reason or proc.returncode}): {tail}")
        if reason == "deadline" or len(done) >= len(paths):
            return done, None, None
        if reason is None:
            tail = errors.read_bytes().decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            reason = f"oracle child exited {proc.returncode}: {tail[0][:200]}"
        return done, paths[len(done)], reason
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _watch(proc: subprocess.Popen[bytes], out: Path, per_file: float, deadline: float | None) -> str | None:
    """Wait for the child; kill it at the deadline or when it makes no progress. Returns why it was killed."""
    last_size, last_progress = -1, time.monotonic()
    while True:
        try:
            proc.wait(timeout=0.2)
            return None
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        size = out.stat().st_size if out.exists() else 0
        if size != last_size:
            last_size, last_progress = size, now
        limit = per_file if size else STARTUP_TIMEOUT_S
        reason = None
        if deadline is not None and now >= deadline:
            reason = "deadline"
        elif now - last_progress > limit:
            reason = f"oracle child hung (no result for {limit:.0f}s)"
        if reason is not None:
            proc.kill()
            proc.wait()
            return reason


def _started(out: Path) -> bool:
    try:
        with open(out, "rb") as handle:
            return json.loads(handle.readline() or b"{}") == _READY
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def _read_results(path: Path) -> list[OracleResult]:
    results: list[OracleResult] = []
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return results
    for line in lines[:-1]:  # the last piece is empty, or a line cut by the child's death
        data = json.loads(line)
        if data == _READY:
            continue
        loaders = {name: LoaderResult.from_json(name, value) for name, value in data["loaders"].items()}
        results.append(OracleResult(data["path"], loaders))
    return results


# --------------------------------------------------------------------------- child side
#
# Everything below runs only in the child (``python tests/scan_oracle.py --child ...``).


class _LoaderTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so loaders' ``except Exception`` cannot swallow it."""


class _Refused(BaseException):
    """The safety net refused an audit event; a BaseException for the same reason."""


_BLOCKED_AUDIT_PREFIXES = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
    "subprocess.Popen", "socket.", "ctypes.", "webbrowser.", "os.startfile", "pty.spawn",
)  # fmt: skip


class _Recorder:
    """Shared state of the child: the allowlist, and what the loader running now has reached."""

    def __init__(self, allowed: set[tuple[str, str]]) -> None:
        self.allowed = allowed
        self.active = False
        self.in_recorder = False
        self.reset()

    def reset(self) -> None:
        self.globals: list[str] = []
        self.unhooked: list[str] = []
        self.unresolvable: list[str] = []
        self.blocked: list[str] = []
        self.tolerated = 0

    # find_class for every unpickler the child knows of
    def find_class(self, module: Any, name: Any, proto: int | None) -> Any:
        module_s, name_s = _effective_name(module, name, proto)
        qualified = f"{module_s}:{name_s}"
        self.globals.append(qualified)
        if (module_s, name_s) in self.allowed:
            return self._resolve(module_s, name_s)
        problem = _unresolvable(module_s, name_s)
        if problem is not None:  # the loader's own find_class would raise here: so does the recorder
            self.unresolvable.append(qualified)
            raise problem
        return _stand_in(qualified)

    def _resolve(self, module: str, name: str) -> Any:
        import importlib

        self.in_recorder = True
        try:
            obj: Any = importlib.import_module(module)
        finally:
            self.in_recorder = False
        for part in name.split("."):
            obj = getattr(obj, part)
        if callable(obj) and not isinstance(obj, type):
            return self._tolerant(obj)
        return obj

    def _tolerant(self, func: Any) -> Any:
        recorder = self

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except Exception:  # noqa: BLE001  (a failed allowlisted call: go on, to reach later globals)
                recorder.tolerated += 1
                return _stand_in(f"<result of {getattr(func, '__qualname__', func)!s}>")()

        call.__wrapped__ = func  # type: ignore[attr-defined]
        return call

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event == "pickle.find_class" and not self.in_recorder:
            self.unhooked.append(f"{args[0]}:{args[1]}")
            raise _Refused(f"find_class outside the recorder: {args[0]}.{args[1]}")
        if event.startswith(_BLOCKED_AUDIT_PREFIXES):
            self.blocked.append(event)
            raise _Refused(f"audit event {event} refused")


def _unresolvable(module: str, name: str) -> Exception | None:
    """The error the stock find_class would raise for this global, decided without importing anything new.

    A module is missing when no finder locates it or its top-level package (a submodule is
    looked up only when its parent is already imported; otherwise it counts as present). An attribute is missing when its
    module is already imported, defines no module ``__getattr__``, and lacks it. Anything
    undecidable counts as resolvable: the oracle errs towards "the loader reaches it".
    """
    import importlib.util

    if not module or module.startswith(".") or "\0" in module:
        return ModuleNotFoundError(f"No module named {module!r}")
    top, parent = module.partition(".")[0], module.rpartition(".")[0]
    if top not in sys.modules:  # looking up a top-level module imports nothing
        try:
            top_spec = importlib.util.find_spec(top)
        except (ImportError, ValueError, AttributeError):
            top_spec = None
        if top_spec is None:
            return ModuleNotFoundError(f"No module named {top!r}")
    if module not in sys.modules and (not parent or parent in sys.modules):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError, AttributeError):
            spec = None
        if spec is None:
            return ModuleNotFoundError(f"No module named {module!r}")
    loaded = sys.modules.get(module)
    if loaded is not None and "__getattr__" not in vars(loaded):
        first = name.split(".")[0]
        if first not in vars(loaded):
            return AttributeError(f"module {module!r} has no attribute {first!r}")
    return None


def _effective_name(module: Any, name: Any, proto: int | None) -> tuple[str, str]:
    """The module and name the stock find_class would import (protocol < 3 maps Python 2 names)."""
    import _compat_pickle

    module_s, name_s = str(module), str(name)
    if proto is None or proto < 3:  # proto unknown (C unpickler): the mapping only ever renames py2 names
        if (module_s, name_s) in _compat_pickle.NAME_MAPPING:
            module_s, name_s = _compat_pickle.NAME_MAPPING[(module_s, name_s)]
        elif module_s in _compat_pickle.IMPORT_MAPPING:
            module_s = _compat_pickle.IMPORT_MAPPING[module_s]
    return module_s, name_s


def _stand_in(label: str) -> type:
    """An inert class standing for a global: calls, BUILD, APPEND and SETITEM all succeed and do nothing."""

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def new(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    namespace = {
        "__init__": init,
        "__new__": new,
        "__setstate__": lambda self, state: None,
        "__setitem__": lambda self, key, value: None,
        "append": lambda self, value: None,
        "extend": lambda self, values: None,
        "__call__": lambda self, *a, **k: _stand_in(label)(),
        "__repr__": lambda self: f"<stand-in {label}>",
        "__reduce__": lambda self: (str, (label,)),
        "_oracle_label": label,
    }
    return type("OracleStandIn", (), namespace)


def _install(recorder: _Recorder) -> Any:
    """Patch pickle so every unpickler in the process records; returns the module torch gets."""
    import _pickle
    import pickle
    import types

    def py_find_class(self: Any, module: Any, name: Any) -> Any:
        return recorder.find_class(module, name, getattr(self, "proto", None))

    pickle._Unpickler.find_class = py_find_class  # type: ignore[method-assign]  # joblib's unpicklers

    class RecordingUnpickler(_pickle.Unpickler):  # the C unpickler numpy, pickle.load and torch use
        def find_class(self, module: Any, name: Any) -> Any:
            return recorder.find_class(module, name, None)

    class TorchRecordingUnpickler(RecordingUnpickler):
        def __setattr__(self, key: str, value: Any) -> None:
            if key == "persistent_load" and callable(value):
                value = _tolerant_persistent_load(recorder, value)
            super().__setattr__(key, value)

    def load(file: Any, **kwargs: Any) -> Any:
        return RecordingUnpickler(file, **kwargs).load()

    def loads(data: bytes, **kwargs: Any) -> Any:
        import io

        return RecordingUnpickler(io.BytesIO(data), **kwargs).load()

    def torch_load(file: Any, **kwargs: Any) -> Any:
        return TorchRecordingUnpickler(file, **kwargs).load()

    pickle.Unpickler = RecordingUnpickler  # type: ignore[misc]
    pickle.load = load
    pickle.loads = loads
    module = types.ModuleType("airlock_oracle_pickle")
    module.Unpickler = TorchRecordingUnpickler  # type: ignore[attr-defined]
    module.load = torch_load  # type: ignore[attr-defined]
    module.loads = lambda data, **kw: torch_load(__import__("io").BytesIO(data), **kw)  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return module


def _tolerant_persistent_load(recorder: _Recorder, func: Any) -> Any:
    def persistent_load(saved_id: Any) -> Any:
        try:
            return func(saved_id)
        except Exception:  # noqa: BLE001  (a broken storage reference: go on, to reach later globals)
            recorder.tolerated += 1
            return _stand_in("<storage>")()

    return persistent_load


def _run_loader(loader: str, path: str, recorder: _Recorder, torch_pickle: Any, timeout_s: float) -> dict[str, Any]:
    import signal

    recorder.reset()
    result: dict[str, Any] = {}

    def on_alarm(signum: int, frame: Any) -> None:
        raise _LoaderTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    recorder.active = True
    try:
        _LOAD[loader](path, torch_pickle)
        result["error"] = None
    except _LoaderTimeout:
        result["error"] = "timeout"
        result["timed_out"] = True
    except (_Refused, Exception) as exc:  # noqa: BLE001  (whatever the loader raised is its verdict on the file)
        result["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        recorder.active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    result.update(
        globals=list(dict.fromkeys(recorder.globals)),
        tolerated=recorder.tolerated,
        unhooked=list(dict.fromkeys(recorder.unhooked)),
        unresolvable=list(dict.fromkeys(recorder.unresolvable)),
        blocked_events=list(dict.fromkeys(recorder.blocked)),
    )
    return result


def _load_torch(path: str, torch_pickle: Any) -> None:
    import torch

    torch.load(path, weights_only=False, pickle_module=torch_pickle, map_location="cpu")


def _load_joblib(path: str, torch_pickle: Any) -> None:
    import joblib

    joblib.load(path)


def _load_numpy(path: str, torch_pickle: Any) -> None:
    import numpy as np

    loaded = np.load(path, allow_pickle=True)
    if hasattr(loaded, "files"):  # NpzFile: members load lazily; read every one
        with loaded:
            for name in loaded.files:
                loaded[name]


def _load_pickle(path: str, torch_pickle: Any) -> None:
    import pickle

    with open(path, "rb") as handle:
        pickle.load(handle)


_LOAD = {"torch": _load_torch, "joblib": _load_joblib, "numpy": _load_numpy, "pickle": _load_pickle}


def _child_main(request_path: str, out_path: str) -> int:
    import resource
    import warnings

    request = json.loads(Path(request_path).read_text())
    limit = int(request["memory_limit"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.setrecursionlimit(5000)
    warnings.simplefilter("ignore")
    import joblib  # noqa: F401  (imported before the hooks go in: imports are not the file's doing)
    import numpy  # noqa: F401
    import torch

    recorder = _Recorder({(m, n) for m, n in request["allowed"]})

    def no_jit(*args: Any, **kwargs: Any) -> Any:
        recorder.globals.append(TORCHSCRIPT_DISPATCH)
        raise _Refused("torch.load dispatched to torch.jit.load (TorchScript)")

    torch.jit.load = no_jit  # type: ignore[assignment]
    torch_pickle = _install(recorder)
    sys.addaudithook(recorder.audit)
    timeout = float(request["loader_timeout_s"])
    with open(out_path, "a", encoding="utf-8") as out:
        out.write(json.dumps(_READY) + "\n")
        out.flush()
        for path in request["paths"]:
            loaders = {name: _run_loader(name, path, recorder, torch_pickle, timeout) for name in request["loaders"]}
            out.write(json.dumps({"path": path, "loaders": loaders}) + "\n")
            out.flush()
            _clean_cwd()
    return 0


def _clean_cwd() -> None:
    """Anything a loader wrote (torch's legacy tar extraction, a .patch file) goes with the file."""
    for entry in Path.cwd().iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2], sys.argv[3]))
    # Manual use: python tests/scan_oracle.py FILE... prints each file's oracle result.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "include"))
    allow = airlock_allowlist()
    for p, r in run_oracle(sys.argv[1:], allowed=allow).items():
        print(p, "crashed: " + r.crashed if r.crashed else "")
        for name, lr in r.loaders.items():
            print(f"  {name:7} opened={lr.opened} globals={lr.reached()} error={lr.error}")
        print("  outside allowlist:", r.outside(allow))
