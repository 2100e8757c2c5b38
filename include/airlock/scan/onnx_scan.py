"""ONNX: walk the ModelProto for custom-op domains and external data, without the onnx package.

Two things make an ONNX model more than data: ops from a domain the runtime does not ship
(they need a custom-op shared library: external *code*), and tensors whose bytes live in other
files (``data_location = EXTERNAL``), whose paths must stay inside the model directory. Every
graph is visited: the main graph, subgraphs in node attributes (If/Loop/Scan), training graphs
and model-local functions. Field numbers are those of onnx/onnx.proto.
"""

from __future__ import annotations

import posixpath
from typing import Any

from airlock.scan import protobuf as pb
from airlock.scan.context import Blob, ScanContext

# Domains implemented by onnxruntime itself (no extra library needed).
STANDARD_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "ai.onnx.training",
        "ai.onnx.preview.training",
        "com.microsoft",
        "com.microsoft.nchwc",
    }
)
_MODEL_FIELDS = {1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 25, 26}
_MAX_GRAPH_DEPTH = 32


def looks_like_onnx(buf: Any, start: int, end: int) -> bool:
    """A ModelProto: ir_version varint, a graph message, and only ModelProto field numbers."""
    try:
        top = pb.shape(buf, start, end)
    except pb.ProtobufError:
        return False
    return top.get(1) == {pb.VARINT} and top.get(7) == {pb.LEN} and set(top) <= _MODEL_FIELDS


class _Walker:
    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.domains: dict[str, str] = {}  # domain -> first op seen
        self.local_function_domains: set[str] = set()
        self.external: list[tuple[str, str]] = []  # (tensor name, location)

    def model(self, start: int, end: int) -> None:
        for number, _wire, value in pb.fields(self.buf, start, end):
            if number == 7:
                self.graph(value, 0)
            elif number == 20:  # TrainingInfoProto: initialization (1), algorithm (2)
                for sub, _w, span in pb.fields(self.buf, *value):
                    if sub in (1, 2):
                        self.graph(span, 0)
            elif number == 25:
                self.function(value)

    def function(self, span: tuple[int, int]) -> None:
        for number, _wire, value in pb.fields(self.buf, *span):
            if number == 7:
                self.node(value, 0)
            elif number == 10:
                self.local_function_domains.add(pb.text(self.buf, value))

    def graph(self, span: tuple[int, int], depth: int) -> None:
        if depth > _MAX_GRAPH_DEPTH:
            raise pb.ProtobufError("graphs nested too deep")
        for number, _wire, value in pb.fields(self.buf, *span):
            if number == 1:
                self.node(value, depth)
            elif number == 5:
                self.tensor(value)
            elif number == 15:  # SparseTensorProto: values (1), indices (2)
                for sub, _w, t in pb.fields(self.buf, *value):
                    if sub in (1, 2):
                        self.tensor(t)

    def node(self, span: tuple[int, int], depth: int) -> None:
        op_type, domain = "", ""
        for number, _wire, value in pb.fields(self.buf, *span):
            if number == 4:
                op_type = pb.text(self.buf, value)
            elif number == 7:
                domain = pb.text(self.buf, value)
            elif number == 5:
                self.attribute(value, depth)
        self.domains.setdefault(domain, op_type)

    def attribute(self, span: tuple[int, int], depth: int) -> None:
        for number, _wire, value in pb.fields(self.buf, *span):
            if number in (6, 11):  # g, graphs
                self.graph(value, depth + 1)
            elif number in (5, 10):  # t, tensors
                self.tensor(value)

    def tensor(self, span: tuple[int, int]) -> None:
        name, location, external = "", None, False
        for number, wire, value in pb.fields(self.buf, *span):
            if number == 8:
                name = pb.text(self.buf, value)
            elif number == 14 and wire == pb.VARINT:
                external = value == 1
            elif number == 13:
                key = val = ""
                for sub, _w, s in pb.fields(self.buf, *value):
                    if sub == 1:
                        key = pb.text(self.buf, s)
                    elif sub == 2:
                        val = pb.text(self.buf, s)
                if key == "location":
                    location = val
        if external or location is not None:
            self.external.append((name, location or ""))


def scan_onnx(ctx: ScanContext, blob: Blob) -> str:
    where = ctx.where(blob)
    walker = _Walker(blob.buf)
    try:
        walker.model(blob.start, blob.end)
    except pb.ProtobufError as exc:
        ctx.hit("onnx.malformed", f"{where}: {exc}", blob)
        return "onnx"
    for domain, op in sorted(walker.domains.items()):
        if domain not in STANDARD_DOMAINS and domain not in walker.local_function_domains:
            ctx.hit("onnx.custom_domain", f"{where}: op {op!r} from custom domain {domain!r}", blob)
    base = posixpath.dirname(ctx.rel_path) if blob.location is None else None
    for name, location in walker.external:
        normalized = posixpath.normpath(location) if location else ""
        if not location or location.startswith(("/", "\\")) or normalized.startswith("..") or ":" in location:
            ctx.hit("onnx.external_path", f"{where}: tensor {name!r} reads external data from {location!r}", blob)
            continue
        ctx.hit("onnx.external_data", f"{where}: tensor {name!r} data is in {location!r}", blob)
        if base is not None:
            ctx.onnx_external_refs.add(posixpath.normpath(posixpath.join(base, location)))
    return "onnx"
