"""Code shipped with a model: Python, native libraries, scripts, notebooks.

Here the *name* counts as much as the content, on purpose: transformers imports
``modeling_x.py`` because of its name, whatever it contains, and a ``.so`` is loaded by name.
So a file is code if its content says so (ELF/PE/Mach-O, bytecode, a shebang, a notebook) or
its suffix does. ``auto_map`` in configs is reported by text_scan. The tier decides: low/medium
flag it for approval, high/critical block.
"""

from __future__ import annotations

from airlock.scan.context import Blob, ScanContext

CODE_SUFFIXES: dict[str, str] = {
    ".py": "Python source", ".pyw": "Python source", ".pyc": "Python bytecode", ".pyo": "Python bytecode",
    ".pyx": "Cython source", ".pyd": "native library", ".so": "native library", ".dylib": "native library",
    ".dll": "native library", ".exe": "executable", ".sh": "shell script", ".bash": "shell script",
    ".zsh": "shell script", ".ksh": "shell script", ".ps1": "PowerShell script", ".bat": "batch script",
    ".cmd": "batch script", ".ipynb": "notebook",
}  # fmt: skip
CODE_FORMATS: dict[str, str] = {
    "native_code": "native executable or library",
    "pyc": "Python bytecode",
    "script": "script with a #! interpreter line",
    "notebook": "Jupyter notebook",
}


def check_code(ctx: ScanContext, blob: Blob, fmt: str) -> None:
    kind = CODE_FORMATS.get(fmt) or CODE_SUFFIXES.get(blob.suffix)
    if kind:
        ctx.hit("remote_code.file", f"{ctx.where(blob)}: {kind} ({fmt})", blob)
