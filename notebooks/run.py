"""Execute the notebooks in full mode, in place, and write ``notebooks/README.md`` from them.

``make notebooks`` runs this. Each notebook runs in its own process (``--one NAME``) so its
peak memory can be read from its own descendants: the kernel's ``ru_maxrss``, or the sum of
the kernel's and its child processes' (a sweep's dask workers) resident memory sampled every
0.5 s, whichever is larger. The wall time is the execution's. Claims a notebook checks with
:func:`grokwidgets.notebook.claim` are collected through ``GROKWIDGETS_CLAIMS``. Results go
to ``notebooks/results.json`` (committed) and the table in ``notebooks/README.md`` is
rewritten between its markers, so the README says what the last full run measured and nothing
typed by hand.

Usage: ``python notebooks/run.py [NAME ...]`` (default: every ``notebooks/*.ipynb``);
``--readme`` only rewrites the README from ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
README = HERE / "README.md"
BEGIN, END = "<!-- table: begin (notebooks/run.py) -->", "<!-- table: end -->"
TIMEOUT_S = 1200  # per cell; the full mode's budget is 10 minutes per notebook


class TreeMemory(threading.Thread):
    """Samples the summed resident memory of this process's descendants every ``every`` s."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.peak = every, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sample until :meth:`stop`."""
        import psutil

        me = psutil.Process()
        while not self._stop_event.wait(self.every):
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # ended between the listing and the read
                    continue
            self.peak = max(self.peak, total)

    def stop(self) -> None:
        """End the sampling (``peak`` holds the largest sum seen)."""
        self._stop_event.set()
        self.join()


def run_one(name: str) -> dict:
    """Execute one notebook in place in full mode; its wall time, peak memory and claims."""
    import nbformat
    from nbclient import NotebookClient

    path = HERE / name
    nb = nbformat.read(path, as_version=4)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        claims_file = f.name
    os.environ.update(
        {
            "GROKWIDGETS_CLAIMS": claims_file,
            "GROKWIDGETS_NOTEBOOK": name,
            "GROKWIDGETS_SMOKE": "0",
        }
    )
    # No widget state in the file (megabytes of synced traits no static viewer uses): GitHub
    # and nbviewer show the widgets' PNG fallbacks.
    client = NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        store_widget_state=False,
        resources={"metadata": {"path": str(HERE)}},
    )
    t0 = time.perf_counter()
    error = None
    sampler = TreeMemory()
    sampler.start()
    try:
        client.execute()
    except Exception as err:  # noqa: BLE001 (the notebook's error is reported, outputs kept)
        error = f"{type(err).__name__}: {str(err).splitlines()[-1] if str(err) else ''}"
    finally:
        sampler.stop()
    wall = time.perf_counter() - t0
    shrink_images(nb)
    nbformat.write(nb, path)
    # The kernel's own peak, or the sum over it and its child processes (a notebook's dask
    # workers), whichever is larger: the memory the notebook needs from the machine.
    peak_kb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, sampler.peak // 1024)
    claims = [json.loads(x) for x in Path(claims_file).read_text().splitlines() if x.strip()]
    Path(claims_file).unlink()
    return {
        "notebook": name,
        "wall_s": round(wall, 1),
        "peak_mb": round(peak_kb / 1024),
        "error": error,
        "claims": claims,
        "date": time.strftime("%Y-%m-%d"),
    }


def shrink_images(nb: object, colors: int = 128) -> None:
    """Re-encode every PNG output with a ``colors`` palette (charts: ~20× smaller, same look)."""
    import base64
    import io

    from PIL import Image

    for cell in nb.cells:  # type: ignore[attr-defined]
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" not in data:
                continue
            raw = base64.b64decode(data["image/png"])
            image = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=colors)
            buf = io.BytesIO()
            image.save(buf, "PNG", optimize=True)
            if buf.tell() < len(raw):
                data["image/png"] = base64.b64encode(buf.getvalue()).decode()


def _title(name: str) -> str:
    import nbformat

    nb = nbformat.read(HERE / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return name


def write_readme(results: dict[str, dict]) -> None:
    """Rewrite the README's table between its markers from ``results``."""
    rows = [
        "| notebook | shows | full mode: wall, peak memory | claim | paper | ours | |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(results):
        r = results[name]
        head = f"| [`{name}`]({name}) | {_title(name)} | {r['wall_s']:.0f} s, {r['peak_mb']} MB" + (
            f" (**error**: {r['error']})" if r.get("error") else ""
        )
        claims = r["claims"] or [{"claim": "—", "paper": None, "ours": "—", "passed": None}]
        for i, c in enumerate(claims):
            mark = "" if c["passed"] is None else ("pass" if c["passed"] else "**fail**")
            paper = c["paper"] if c["paper"] else "not given"
            lead = head if i == 0 else "| | |"
            rows.append(f"{lead} | {c['claim']} | {paper} | {c['ours']} | {mark} |")
    table = "\n".join(rows)
    text = README.read_text()
    start, end = text.index(BEGIN), text.index(END)
    README.write_text(text[: start + len(BEGIN)] + "\n" + table + "\n" + text[end:])


def main() -> None:
    """Run the named (default: all) notebooks in full mode, then rewrite the README table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--readme", action="store_true", help="only rewrite the README")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.readme:
        names = args.names or sorted(p.name for p in HERE.glob("*.ipynb"))
        for name in names:
            print(f"{name}: running in full mode ...", flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--one", name], capture_output=True, text=True
            )
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"{name}: the runner failed")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results[name] = result
            failed = [c["claim"] for c in result["claims"] if not c["passed"]]
            print(
                f"{name}: {result['wall_s']} s, {result['peak_mb']} MB, "
                f"{len(result['claims'])} claims, failed: {failed or 'none'}"
                + (f", error: {result['error']}" if result["error"] else ""),
                flush=True,
            )
            RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write_readme(results)


if __name__ == "__main__":
    main()
