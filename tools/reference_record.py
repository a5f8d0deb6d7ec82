"""Write a reference record (``benchmarks/reference/*.json``) of finished ``gsa train`` runs.

Each run directory contributes its configuration (``config.json``, without the machine's paths), the
main figures of its ``report.json`` and its per-epoch rows of ``metrics.csv``; the record adds what
the runs cannot know: what was measured, the command, the machine and the date::

    python tools/reference_record.py --out benchmarks/reference/train-x.json \\
        --what "gsa train, recipe mini, seeds 0-2" --command "gsa train --seed S" \\
        --machine "2-core AMD EPYC VM (AVX2), torch 2.13.0+cpu, 2 threads, nothing else running" runs/s0 runs/s1
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

#: The figures of ``report.json`` a record keeps.
REPORT_KEYS = (
    "test_accuracy",
    "test_loss",
    "test_images",
    "best_valid_accuracy",
    "best_epoch",
    "steps",
    "stopped",
    "train_seconds",
    "images_per_s",
    "peak_memory_bytes",
    "param_count",
    "torch_version",
    "rotation",
    "invariance",
    "git_commit",
    "finished_at",
)
#: ``config.json`` fields that are paths on the machine that ran, not settings.
MACHINE_PATHS = ("out", "data_dir")


def _number(key: str, text: str) -> Any:
    return int(text) if key in ("epoch", "step") else float(text)


def run_record(run_dir: Path) -> dict[str, Any]:
    """The record of one finished run: its name, configuration, report figures and epochs."""
    missing = [name for name in ("config.json", "report.json", "metrics.csv") if not (run_dir / name).is_file()]
    if missing:
        raise SystemExit(f"{run_dir}: not a finished gsa run (no {', '.join(missing)})")
    config = json.loads((run_dir / "config.json").read_text())
    for key in MACHINE_PATHS:
        config.pop(key, None)
    report = json.loads((run_dir / "report.json").read_text())
    with (run_dir / "metrics.csv").open(newline="") as fh:
        epochs = [{k: _number(k, v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return {"run": run_dir.name, "config": config, "report": {k: report.get(k) for k in REPORT_KEYS}, "epochs": epochs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    p.add_argument("--out", type=Path, required=True, help="the record to write (JSON)")
    p.add_argument("--what", required=True, help="what the runs measure")
    p.add_argument("--command", required=True, help="the command that made the runs")
    p.add_argument("--machine", required=True, help="CPU or GPU, threads, what else ran, torch version")
    p.add_argument("--date", default=dt.date.today().isoformat(), help="default: today")
    args = p.parse_args(argv)
    record = {
        "benchmark": args.what,
        "command": args.command,
        "date": args.date,
        "machine": args.machine,
        "runs": [run_record(d) for d in args.runs],
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out} ({len(args.runs)} run(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
