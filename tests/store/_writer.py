"""A writer process for the concurrency tests: appends records whose values are known.

value(step, layer i, metric j) = step * 1000 + 10 * i + j; metric "late" appears at step 50;
a "spectrum" array of length 1 + step % 7 per layer. Prints "committed N" after every flush.
"""

import sys
import time

from grokwidgets.store.records import Record
from grokwidgets.store.run_dir import write_run_json
from grokwidgets.store.zarr_store import ZarrRecordWriter

LAYERS = ["model", "encoder.0", "readout"]
METRICS = ["a", "b", "c"]


def make_record(step: int) -> Record:
    rec = Record(step=step)
    names = METRICS + (["late"] if step >= 50 else [])
    for i, layer in enumerate(LAYERS):
        for j, metric in enumerate(names):
            rec.values[(layer, metric)] = step * 1000.0 + 10 * i + j
        rec.arrays.setdefault("spectrum", {})[layer] = [step + k for k in range(1 + step % 7)]
    return rec


def main() -> None:
    run_dir, mode, n_records, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    if mode == "w":
        write_run_json(run_dir, {"status": "running", "config": {}})
    writer = ZarrRecordWriter(
        f"{run_dir}/metrics.zarr", mode=mode, flush_every=7, flush_seconds=1e9
    )
    start = writer.n
    for step in range(start, start + n_records):
        before = writer.n
        writer.append(make_record(step))
        if writer.n != before:
            print(f"committed {writer.n}", flush=True)
        time.sleep(pause)
    writer.close()
    print(f"committed {writer.n}", flush=True)


if __name__ == "__main__":
    main()
