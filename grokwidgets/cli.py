"""Command line: ``grokwidgets run | resume | sweep | report | check | presets``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from grokwidgets.store.checkpoints import CheckpointError
from grokwidgets.store.zarr_store import StoreError
from grokwidgets.sweeps.runner import SweepError

_USER_ERRORS = (
    ValueError,
    KeyError,
    FileExistsError,
    FileNotFoundError,
    CheckpointError,
    StoreError,
    SweepError,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grokwidgets", description="Record and report grokking runs.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start a run from a preset or a .json/.toml config")
    run.add_argument("preset", help="preset name (see `grokwidgets presets`) or config file")
    run.add_argument("--dir", required=True, help="run directory to write")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a field, e.g. --set train.steps=5000 --set task.p=113",
    )
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --dir")
    run.add_argument("--no-report", action="store_true", help="do not write report.html")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    res = sub.add_parser("resume", help="continue a run from its latest checkpoint")
    res.add_argument("dir")
    res.add_argument("--no-report", action="store_true")
    res.add_argument("--no-progress", action="store_true")

    swp = sub.add_parser(
        "sweep",
        help="run a grid of runs on dask (a LocalCluster, or --scheduler) from a TOML file",
        description="Run the sweep a TOML file describes: `preset = NAME` or `config = FILE`, "
        '`dir = DIR`, `seeds = [0, 1]`, a [grid] table (`"train.weight_decay" = [0.1, 1.0]`) '
        'and an [overrides] table (`"train.steps" = 2000`). Run it again to complete what is '
        "missing: finished points are skipped, interrupted ones resume.",
    )
    swp.add_argument("config", help="the sweep's TOML file")
    swp.add_argument("--dir", help="sweep directory (default: `dir` in the TOML file)")
    swp.add_argument(
        "--scheduler",
        help="a dask scheduler's address, e.g. tcp://host:8786 (default: a LocalCluster here)",
    )
    swp.add_argument("--workers", type=int, help="LocalCluster workers (default: one per CPU)")
    swp.add_argument("--extend", action="store_true", help="add points to an existing sweep")
    swp.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    rep = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run, or of a sweep (its phase diagram)",
    )
    rep.add_argument("dir")
    rep.add_argument("--out", help="output file (default DIR/report.html)")
    rep.add_argument("--png", help="also write the charts as one PNG")
    rep.add_argument(
        "--budget",
        type=int,
        default=None,
        metavar="ROWS",
        help="rows per time series above which it is min/max downsampled as in the widgets "
        "(default 4000; a series keeps at most ROWS/2)",
    )

    chk = sub.add_parser(
        "check",
        help="check every file of a run (exit 0 intact, 1 damaged, 2 could not read)",
    )
    chk.add_argument("dir")
    chk.add_argument(
        "--repair",
        action="store_true",
        help="move damaged chunks and checkpoints to DIR/damaged/ and truncate the records to "
        "the last intact one, so that `resume` works again",
    )

    sub.add_parser("presets", help="list the presets")
    return p


def _summary(run_dir: Path, wall: float, report: bool) -> None:
    from grokwidgets.diagnostics.phases import time_to_grok
    from grokwidgets.report import write_report
    from grokwidgets.store import open_run

    ds = open_run(run_dir)
    print(f"run: {run_dir}  ({ds.sizes['step']} records, {wall:.1f} s)")
    if "test_acc" in ds["metric"].values:
        t = time_to_grok(ds)
        final = ds["metrics"].sel(metric="test_acc", layer="model").dropna("step")
        print(f"train accuracy >= 99% at step {t.memorized}")
        print(f"test accuracy >= 95% at step {t.generalized}  (time to grok)")
        if final.sizes["step"]:
            print(f"final test accuracy {float(final.values[-1]):.4f}")
    if report:
        print(f"report: {write_report(run_dir)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``grokwidgets`` command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "presets":
            from grokwidgets.presets import PRESETS

            for name, preset in PRESETS.items():
                print(f"{name}\n    {preset['description']}")
            return 0
        if args.command == "check":
            from grokwidgets.store.check import check_run

            try:
                report = check_run(args.dir, repair=args.repair)
            except (FileNotFoundError, PermissionError) as err:
                print(f"grokwidgets: cannot check: {err}", file=sys.stderr)
                return 2
            print(report)
            return 0 if report.ok else 1
        if args.command == "report":
            from grokwidgets.report import write_png, write_report
            from grokwidgets.store import open_run
            from grokwidgets.store.sweep import SWEEP_JSON

            if (Path(args.dir) / SWEEP_JSON).is_file():
                from grokwidgets.report import write_sweep_png, write_sweep_report
                from grokwidgets.store.sweep import open_sweep

                print(write_sweep_report(args.dir, args.out))
                if args.png:
                    print(write_sweep_png(open_sweep(args.dir), args.png))
                return 0
            print(write_report(args.dir, args.out, budget=args.budget))
            if args.png:
                print(write_png(open_run(args.dir), args.png, budget=args.budget))
            return 0
        if args.command == "sweep":
            from grokwidgets.sweeps.runner import sweep_from_toml

            result = sweep_from_toml(
                args.config,
                dir=args.dir,
                scheduler=args.scheduler,
                n_workers=args.workers,
                extend=args.extend,
                progress=not args.no_progress,
            )
            print(result)
            return 0 if result.ok else 1
        from grokwidgets.replay.restore import resume_run
        from grokwidgets.train.config import apply_overrides, load_config, run_config

        t0 = time.perf_counter()
        if args.command == "run":
            cfg = apply_overrides(load_config(args.preset), args.overrides)
            run = run_config(cfg, args.dir, overwrite=args.overwrite, progress=not args.no_progress)
        else:
            run = resume_run(args.dir, progress=not args.no_progress)
        assert run.dir is not None
        _summary(run.dir, time.perf_counter() - t0, report=not args.no_report)
        return 0
    except _USER_ERRORS as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"grokwidgets: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
