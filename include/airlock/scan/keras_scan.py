"""Keras: Lambda layers carry Python (marshalled bytecode or source) and run when the model loads.

* ``.keras`` (Keras 3, a zip): ``config.json`` is parsed and every layer config walked.
* legacy ``.h5`` / TensorFlow ``tf_model.h5`` (HDF5): h5py is not installed, so the file cannot
  be parsed. HDF5 stores attributes uncompressed, so the ``model_config`` JSON is searched for
  in the raw bytes: a Lambda layer there blocks; otherwise the file is reported as unscannable
  and the tier decides (fail closed: never silently allowed).
* ``keras_metadata.pb`` in a SavedModel: the same byte search.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from airlock.scan.context import Blob, ScanContext

_LAMBDA = re.compile(rb'"class_name"\s*:\s*"(?:Lambda|TFOpLambda)"')
_MODEL_CONFIG = b"model_config"


def _layers(node: Any) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if "class_name" in current:
                yield current
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def check_keras_config(ctx: ScanContext, blob: Blob) -> None:
    where = ctx.where(blob)
    try:
        config = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        ctx.hit("keras.malformed", f"{where}: config.json does not parse: {exc}", blob)
        return
    for layer in _layers(config):
        cls = layer.get("class_name")
        name = layer.get("config", {}).get("name") if isinstance(layer.get("config"), dict) else None
        if cls in ("Lambda", "TFOpLambda"):
            ctx.hit("keras.lambda_layer", f"{where}: layer {name!r} is a {cls} (runs Python when loaded)", blob)
        module = layer.get("module")
        if isinstance(module, str) and module and module.split(".")[0] not in ("keras", "tf_keras", "tensorflow"):
            ctx.hit("keras.custom_object", f"{where}: layer {name!r} class {cls!r} comes from module {module!r}", blob)


def scan_hdf5(ctx: ScanContext, blob: Blob) -> str:
    where = ctx.where(blob)
    blob.prefetch()
    match = _LAMBDA.search(blob.buf, blob.start, blob.end) if blob.size else None
    if match:
        offset = match.start() - blob.start
        ctx.hit(
            "keras.lambda_layer", f"{where}: Keras model config at offset {offset} has a Lambda layer", blob, offset
        )
    kind = "a Keras model (model_config)" if blob.buf.find(_MODEL_CONFIG, blob.start, blob.end) >= 0 else "HDF5 data"
    ctx.hit("hdf5.unscannable", f"{where}: {kind}; HDF5 is not parsed (h5py is not installed)", blob)
    return "hdf5"


def scan_keras_metadata(ctx: ScanContext, blob: Blob) -> None:
    match = _LAMBDA.search(blob.buf, blob.start, blob.end)
    if match:
        ctx.hit("keras.lambda_layer", f"{ctx.where(blob)}: keras metadata declares a Lambda layer", blob)
