"""NumPy ``.npy``: the header is parsed with numpy's own reader; object arrays are pickles.

``np.load`` only unpickles an object-dtype array, and only with ``allow_pickle=True`` - a flag
a loader has to be talked into. Object arrays therefore always block (numpy itself calls them
unsafe); the pickle is still walked so the finding names what it would import. Other dtypes
are plain data, checked to be exactly as long as the header says.
"""

from __future__ import annotations

import io
import math

from airlock.scan import pickle_scan
from airlock.scan.context import Blob, ScanContext

_MAX_HEADER = 1 << 20  # numpy's own default max_header_size is 10 000; be generous but bounded


def scan_npy(ctx: ScanContext, blob: Blob) -> str:
    from numpy.lib import format as npformat

    where = ctx.where(blob)
    head = io.BytesIO(blob.head(_MAX_HEADER + 16))
    try:
        version = npformat.read_magic(head)
        if version == (1, 0):
            shape, _fortran, dtype = npformat.read_array_header_1_0(head, max_header_size=_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = npformat.read_array_header_2_0(head, max_header_size=_MAX_HEADER)
        else:
            raise ValueError(f"unsupported npy version {version}")
    except (ValueError, SyntaxError, TypeError, EOFError) as exc:
        ctx.hit("numpy.malformed", f"{where}: npy header cannot be parsed: {exc}", blob)
        return "numpy"
    data_offset = head.tell()
    if dtype.hasobject:
        ctx.hit(
            "numpy.object_dtype",
            f"{where}: object-dtype array {shape} (np.load would unpickle the bytes at offset {data_offset})",
            blob,
            data_offset,
        )
        # np.load reads it with pickle.load: a NumpyArrayWrapper there is an object, not a raw array.
        pickle_scan.scan_pickle(ctx, blob.tail_from(data_offset), reading="c")
        return "numpy"
    count = math.prod(shape)  # Python ints: a hostile shape cannot overflow
    expected = count * dtype.itemsize
    actual = blob.size - data_offset
    if actual != expected:
        ctx.hit(
            "numpy.malformed",
            f"{where}: array data is {actual} bytes, header {dtype.str}{list(shape)} says {expected}",
            blob,
            data_offset,
        )
    return "numpy"
