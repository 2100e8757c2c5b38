"""TensorFlow SavedModel (``saved_model.pb``): graph ops that touch files, processes or Python.

A SavedModel is a graph, not code, but some ops do I/O when the graph runs (ReadFile,
WriteFile, ...) or call back into Python (PyFunc). Every NodeDef in every MetaGraph's graph and
function library is checked against that list. Keras metadata inside the SavedModel directory
(``keras_metadata.pb``) is checked for Lambda layers by keras_scan. Field numbers are those of
tensorflow/core/protobuf/{saved_model,meta_graph}.proto and framework/{graph,function,node_def}.proto.
"""

from __future__ import annotations

import posixpath
from typing import Any

from airlock.scan import protobuf as pb
from airlock.scan.context import Blob, ScanContext

DANGEROUS_OPS = frozenset(
    {
        "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst",  # arbitrary paths
        "PyFunc", "PyFuncStateless", "EagerPyFunc",  # Python callbacks
        "WholeFileReader", "WholeFileReaderV2", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
    }
)  # fmt: skip
_META_GRAPH_FIELDS = {1, 2, 3, 4, 5, 6, 7}


def looks_like_savedmodel(buf: Any, start: int, end: int) -> bool:
    try:
        top = pb.shape(buf, start, end)
        if not (set(top) <= {1, 2} and top.get(2) == {pb.LEN} and top.get(1, {pb.VARINT}) == {pb.VARINT}):
            return False
        for number, _wire, span in pb.fields(buf, start, end):
            if number == 2:
                return set(pb.shape(buf, *span)) <= _META_GRAPH_FIELDS
    except pb.ProtobufError:
        return False
    return False


def _graph_ops(buf: Any, span: tuple[int, int]) -> list[str]:
    ops: list[str] = []
    for number, _wire, value in pb.fields(buf, *span):
        if number == 1:  # NodeDef
            ops.extend(_node_op(buf, value))
        elif number == 2:  # FunctionDefLibrary.function (1) -> FunctionDef.node_def (3)
            for fnum, _w, fspan in pb.fields(buf, *value):
                if fnum == 1:
                    for dnum, _w2, nspan in pb.fields(buf, *fspan):
                        if dnum == 3:
                            ops.extend(_node_op(buf, nspan))
    return ops


def _node_op(buf: Any, span: tuple[int, int]) -> list[str]:
    return [pb.text(buf, value) for number, _wire, value in pb.fields(buf, *span) if number == 2]


def scan_savedmodel(ctx: ScanContext, blob: Blob) -> str:
    where = ctx.where(blob)
    try:
        ops: list[str] = []
        for number, _wire, meta in pb.fields(blob.buf, blob.start, blob.end):
            if number == 2:
                for mnum, _w, value in pb.fields(blob.buf, *meta):
                    if mnum == 2:  # graph_def
                        ops.extend(_graph_ops(blob.buf, value))
    except pb.ProtobufError as exc:
        ctx.hit("tf.malformed", f"{where}: {exc}", blob)
        return "tf_savedmodel"
    for op in sorted(set(ops) & DANGEROUS_OPS):
        ctx.hit("tf.dangerous_op", f"{where}: graph uses op {op!r}", blob)
    if blob.location is None:
        ctx.savedmodel_dirs.add(posixpath.dirname(ctx.rel_path))
    return "tf_savedmodel"


def looks_like_sentencepiece(buf: Any, start: int, end: int) -> bool:
    """sentencepiece ModelProto: repeated ``pieces`` (1) of ``{piece: string, score: float, type: enum}``."""
    try:
        top = pb.shape(buf, start, end)
        if 1 not in top or not set(top) <= {1, 2, 3, 4, 5} or any(w != {pb.LEN} for w in top.values()):
            return False
        for number, _wire, span in pb.fields(buf, start, end):
            if number == 1:
                piece = pb.shape(buf, *span)
                return 1 in piece and set(piece) <= {1, 2, 3} and piece.get(2, {pb.FIXED32}) == {pb.FIXED32}
    except pb.ProtobufError:
        return False
    return False
