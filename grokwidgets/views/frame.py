"""Binary frames of table rows sent to the front end (snapshots and live deltas).

A frame is ``b"GWF1"``, a little-endian ``uint32`` header length, a UTF-8 JSON header padded
to 8 bytes, then the column data. Numeric columns are float64; text columns are dictionary
encoded (labels in the header, int32 codes in the data). A delta frame carries only the new
rows, so its size grows with the rows sent, not with the history.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Literal

import numpy as np

#: A table: column name -> 1-d array (numbers, or text as an object/str array).
Table = dict[str, np.ndarray]
Mode = Literal["insert", "replace"]
MAGIC = b"GWF1"


def table_rows(table: Table) -> int:
    """Number of rows of ``table`` (0 for a table without columns)."""
    return len(next(iter(table.values()))) if table else 0


def encode_frame(
    tables: dict[str, tuple[Mode, Table]], *, seq: int, base: int, t_ms: float = 0.0
) -> bytes:
    """Encode ``{dataset: (mode, table)}`` as one binary frame.

    Parameters
    ----------
    tables : dict
        Dataset name -> (``"insert"`` to append rows or ``"replace"`` to replace all rows,
        the rows).
    seq : int
        Sequence number of this frame.
    base : int
        Sequence number of the snapshot this frame applies on top of.
    t_ms : float
        Send time (ms since the epoch), for latency measurement.
    """
    header: dict[str, Any] = {"seq": seq, "base": base, "t": t_ms, "tables": {}}
    chunks: list[bytes] = []
    offset = 0
    for name, (mode, table) in tables.items():
        cols = []
        for col, values in table.items():
            arr = np.asarray(values)
            if arr.dtype.kind in "biuf":
                data = np.ascontiguousarray(arr, dtype="<f8").tobytes()
                cols.append({"name": col, "kind": "f8", "offset": offset})
            else:
                labels, codes = np.unique(arr.astype(str), return_inverse=True)
                data = np.ascontiguousarray(codes, dtype="<i4").tobytes()
                data += b"\0" * (-len(data) % 8)
                cols.append(
                    {"name": col, "kind": "cat", "labels": labels.tolist(), "offset": offset}
                )
            chunks.append(data)
            offset += len(data)
        header["tables"][name] = {"mode": mode, "n": table_rows(table), "cols": cols}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-(len(head) + 8) % 8)
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(chunks)


def decode_frame(frame: bytes) -> tuple[dict[str, Any], dict[str, tuple[Mode, Table]]]:
    """Inverse of :func:`encode_frame` (the front end does the same in JavaScript)."""
    if frame[:4] != MAGIC:
        msg = f"Not a grokwidgets frame (starts with {frame[:4]!r}, expected {MAGIC!r})."
        raise ValueError(msg)
    (size,) = struct.unpack("<I", frame[4:8])
    header = json.loads(frame[8 : 8 + size])
    data = memoryview(frame)[8 + size :]
    out: dict[str, tuple[Mode, Table]] = {}
    for name, spec in header["tables"].items():
        n = spec["n"]
        table: Table = {}
        for col in spec["cols"]:
            if col["kind"] == "f8":
                table[col["name"]] = np.frombuffer(data, "<f8", n, col["offset"]).copy()
            else:
                codes = np.frombuffer(data, "<i4", n, col["offset"])
                table[col["name"]] = np.asarray(col["labels"], dtype=object)[codes]
        out[name] = (spec["mode"], table)
    return header, out
