"""A writer process for the invariant test: late records, a truncation, and its ground truth.

``python -m tests.store._late_writer STORE LOG [unsafe]`` appends records to the metrics store
``STORE``; every 5th step gets a late record after a flush (the case that used to rewrite the
committed row in place), and half-way the store is truncated and rewritten with other values
(the case of ``resume``). After every commit it appends ``{"generation", "digest"}`` of what it
committed to ``LOG``. With ``unsafe`` it also scribbles on the last committed row before each
late record, as the old writer did, so the test can show that it catches that.
"""

import hashlib
import json
import sys
import time

import numpy as np

from grokwidgets.store.records import Record
from grokwidgets.store.zarr_store import ZarrRecordWriter, read_committed

LAYERS = ["model", "readout"]


def digest(ds) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds["step"].values).tobytes())
    h.update("|".join(map(str, ds["metric"].values)).encode())
    h.update(np.ascontiguousarray(ds["metrics"].values).tobytes())
    if "spectrum" in ds:
        h.update(np.ascontiguousarray(ds["spectrum"].values).tobytes())
    return h.hexdigest()


def record(step: int, version: int, late: bool = False) -> Record:
    rec = Record(step=step)
    for i, layer in enumerate(LAYERS):
        rec.values[(layer, "a")] = 1000.0 * step + 10 * i + version + (0.5 if late else 0.0)
        if late:
            rec.values[(layer, "late")] = -float(step)
        rec.arrays.setdefault("spectrum", {})[layer] = np.full(1 + step % 3, float(version))
    return rec


def main() -> None:
    store, log_path = sys.argv[1], sys.argv[2]
    unsafe = len(sys.argv) > 3 and sys.argv[3] == "unsafe"
    writer = ZarrRecordWriter(store, mode="w", flush_every=4, flush_seconds=1e9)
    with open(log_path, "a") as log:

        def note() -> None:
            ds, commit = read_committed(store)
            log.write(json.dumps({"generation": commit["generation"], "digest": digest(ds)}))
            log.write("\n")
            log.flush()

        def after(fn, *args):
            before = writer.generation
            fn(*args)
            if writer.generation != before:
                note()

        note()
        for version, steps in ((1, range(0, 120)), (3, range(60, 160))):
            if version == 3:
                after(writer.truncate, 59)  # as a resume from a checkpoint at step 59 does
            for step in steps:
                after(writer.append, record(step, version))
                if step % 5 == 0:
                    after(writer.flush)
                    if unsafe and writer.n:  # the old writer: the committed row, in place
                        arr = writer._group["metrics"]
                        arr[writer.n - 1, 0, 0] = -1.0
                        time.sleep(0.02)
                    after(writer.append, record(step, version, late=True))
            after(writer.flush)
    print("done", flush=True)


if __name__ == "__main__":
    main()
