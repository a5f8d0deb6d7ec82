"""``python -m benchmarks``: time and peak memory of the attention implementations.

Every case runs in its own process (:mod:`benchmarks.worker`); results print as a table and are
written as JSON to ``benchmarks/results/`` (git-ignored). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from .cases import (
    CUDA_ONLY,
    IMPLS,
    Case,
    attention_shapes,
    flops,
    fmt_bytes,
    gmean,
    memory_estimate,
    useful_flops,
)
from .machine import Competitors, cpu_flags, portable, sgemm_rate

ROOT = Path(__file__).resolve().parent
GROUPS = ("z2", "p4", "p8", "p4m")


def default_grid(devices, batches, quick: bool) -> list[Case]:
    """The workloads (implementations are added by :func:`expand`)."""
    cases: list[Case] = []
    if quick:
        for dev in devices:
            cases.append(Case("lifting", "p4", 3, 2, 8, "fast", dev, channels=8, heads=2))
            cases.append(Case("group", "p4", None, 2, 6, "fast", dev, channels=8, heads=2))
            cases.append(Case("rotmnist", "p4", 5, 1, 28, "fast", dev))  # original/dense: skipped (memory)
        return cases
    for dev in devices:
        dtypes = ("float32", "bfloat16") if dev.startswith("cuda") else ("float32",)
        for dt in dtypes:
            # single layers: 20 → 20 channels, 9 heads (the rotMNIST width), batch 8; sizes kept
            # moderate so that the original/dense columns finish in minutes on 2 cores
            for wl in ("lifting", "group"):
                for g in GROUPS:
                    cases.append(Case(wl, g, 5, 8, 20, "fast", dev, dt))
                    cases.append(Case(wl, g, None, 8, 12, "fast", dev, dt))
            # presets
            for b in batches:
                cases.append(Case("rotmnist", "p4", 5, b, 28, "fast", dev, dt))
            for g in ("z2", "p8", "p4m"):
                cases.append(Case("rotmnist", g, 5, 8, 28, "fast", dev, dt))
            cases.append(Case("rotmnist", "p4", None, 8, 28, "fast", dev, dt))
            # the main command's network (gsa train: recipe mini, no dropout), at its batch size
            cases.append(Case("mini", "p4", 3, 16, 28, "fast", dev, dt, attention_dropout=0.0))
            cases.append(Case("cifar10", "z2", 5, 8, 32, "fast", dev, dt))
            cases.append(Case("pcam", "p4", 5, 8, 96, "fast", dev, dt))
            if dev.startswith("cuda"):
                cases.append(Case("rotmnist", "p4", 5, 64, 28, "fast", dev, dt))
                cases.append(Case("pcam", "p4", 5, 64, 96, "fast", dev, dt))
    return cases


def expand(workloads: list[Case], impls) -> list[Case]:
    out, seen = [], set()
    for w in workloads:
        for impl in impls:
            if impl in CUDA_ONLY and not w.device.startswith("cuda"):
                continue
            c = dataclasses.replace(w, impl=impl)
            if c not in seen:
                seen.add(c)
                out.append(c)
    return out


def mem_limit_bytes(device: str, limit_gb: float | None) -> float:
    if limit_gb:
        return limit_gb * 2**30
    if device.startswith("cuda"):
        import torch

        return 0.9 * torch.cuda.get_device_properties(torch.device(device)).total_memory
    avail = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.7 * (avail or 8 * 2**30)


def run_case(case: Case, opts: dict, timeout: float, load: int = 0) -> dict:
    """Run one case in a worker process (with ``load`` competitor processes beside it)."""
    with Competitors(load):
        return _run_worker(case, opts, timeout)


def _run_worker(case: Case, opts: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.worker", json.dumps(dataclasses.asdict(case)), json.dumps(opts)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT.parent) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT.parent)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout (> {timeout:.0f} s)"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            r["status"] = "ok"
            r["wall_s"] = time.perf_counter() - t0
            return r
    err = (p.stderr.strip().splitlines() or ["no output"])[-1]
    if p.returncode < 0 or "out of memory" in p.stderr.lower():
        return {"status": f"failed: out of memory / killed ({err[:80]})"}
    return {"status": f"failed: {err[:120]}"}


def environment(devices) -> dict:
    import torch

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=10,
            ).stdout.strip()
        )
    except Exception:
        commit, dirty = None, None
    cpu = platform.processor() or None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "git_commit": commit,
        "git_dirty": dirty,
        "command": portable("python -m benchmarks " + " ".join(sys.argv[1:])),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cpu_flags": cpu_flags(),
    }
    try:
        from gsa.nn import native

        env["native_kernels"] = portable(native.status())  # builds the library once, before the workers start
    except Exception as exc:  # pragma: no cover - reported, not fatal
        env["native_kernels"] = f"error: {exc}"
    if any(d.startswith("cuda") for d in devices) and torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def _ms(t):
    return "—" if t is None else (f"{t * 1e3:.0f}" if t >= 1 else f"{t * 1e3:.1f}")


def _ratio(a, b):
    return "—" if not a or not b else f"{a / b:.1f}×"


def _times_floor(t, floor):
    """A measured time as a multiple of the floor (useful FLOPs at the measured sgemm rate)."""
    return "—" if not t or not floor else f"{t / floor:.1f}×"


def _percent(part, whole):
    """``part`` as a percentage of ``whole`` (system time of a step)."""
    return "—" if part is None or not whole else f"{100.0 * part / whole:.1f}"


def table(rows: list[dict]) -> str:
    """Markdown table: one block per workload, one row per implementation."""
    out = [
        "| workload | params | impl | infer ms | infer CPU ms | infer mem | train ms | train CPU ms | train mem "
        "| train speed-up vs original | vs dense | train mem reduction vs original | vs dense | train GFLOP | GFLOP/s "
        "| useful train GFLOP | train × floor | train sys % |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict = {}
    for r in rows:
        groups.setdefault(Case(**r["case"]).workload_key(), []).append(r)
    for rs in groups.values():
        by = {r["case"]["impl"]: r for r in rs}

        def get(impl, mode, field, by=by):
            r = by.get(impl)
            return None if not r or r.get("status") != "ok" or mode not in r else r[mode][field]

        for r in rs:
            c = Case(**r["case"])
            impl = c.impl
            label = (
                c.label()
                + ("" if c.device == "cpu" else f" {c.device}")
                + ("" if c.dtype == "float32" else f" {c.dtype}")
            )
            if r.get("status") != "ok":
                out.append(f"| {label} | {r.get('params', '')} | {impl} | {r['status']} |" + " |" * 14)
                continue
            tt, mt = get(impl, "train", "time_s"), get(impl, "train", "peak_bytes")
            gfl = r.get("flops_train", 0) / 1e9
            out.append(
                f"| {label} | {r.get('params', '')} | {impl} | {_ms(get(impl, 'infer', 'time_s'))} "
                f"| {_ms(get(impl, 'infer', 'cpu_s'))} | {fmt_bytes(get(impl, 'infer', 'peak_bytes') or 0)} "
                f"| {_ms(tt)} | {_ms(get(impl, 'train', 'cpu_s'))} | {fmt_bytes(mt or 0)} "
                f"| {_ratio(get('original', 'train', 'time_s'), tt)} | {_ratio(get('dense', 'train', 'time_s'), tt)} "
                f"| {_ratio(get('original', 'train', 'peak_bytes'), mt)} | {_ratio(get('dense', 'train', 'peak_bytes'), mt)} "
                f"| {gfl:.3g} | {gfl / tt:.3g} | {r.get('useful_flops_train', 0) / 1e9:.3g} "
                f"| {_times_floor(tt, r.get('floor_train_s'))} | {_percent(get(impl, 'train', 'sys_s'), tt)} |"
            )
    return "\n".join(out)


def summary(rows: list[dict]) -> str:
    """Geometric-mean speed-ups of ``fast`` over the other implementations, where both ran."""
    lines = []
    groups: dict = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault(Case(**r["case"]).workload_key(), {})[r["case"]["impl"]] = r
    for other in ("original", "dense", "flex"):
        for mode in ("infer", "train"):
            sp = [
                g[other][mode]["time_s"] / g["fast"][mode]["time_s"]
                for g in groups.values()
                if "fast" in g and other in g and mode in g["fast"] and mode in g[other]
            ]
            mem = [
                g[other][mode]["peak_bytes"] / g["fast"][mode]["peak_bytes"]
                for g in groups.values()
                if "fast" in g
                and other in g
                and mode in g["fast"]
                and mode in g[other]
                and g["fast"][mode]["peak_bytes"] > 0
            ]
            if sp:
                lines.append(
                    f"fast vs {other} ({mode}, {len(sp)} workloads): time ×{gmean(sp):.2f} faster, "
                    f"memory ×{gmean(mem) or float('nan'):.2f} less (geometric means)"
                )
    return "\n".join(lines)


def parse(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds); used by the tests")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help="keep workloads whose label contains this text (repeatable; all must match), "
        "e.g. --only rotmnist --only p4",
    )
    ap.add_argument(
        "--match",
        action="append",
        default=[],
        help="keep workloads whose label contains any of these texts (repeatable; applied "
        "after --only), e.g. --match 'pcam p4' --match 'group layer p4 global'",
    )
    ap.add_argument("--device", default=None, help="comma list: cpu,cuda (default: cpu, plus cuda if present)")
    ap.add_argument(
        "--batch",
        default=None,
        help="comma list of batch sizes for the rotmnist preset "
        "(default 8,64); with --only also filters every workload",
    )
    ap.add_argument("--impl", default=",".join(IMPLS), help="comma list of implementations (default: all)")
    ap.add_argument("--modes", default="infer,train", help="infer,train (default both)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per case (default: torch's)")
    ap.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="N",
        help="run N CPU-bound competitor processes beside every case (a reproducible busy machine; default 0)",
    )
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds of repetitions per measurement")
    ap.add_argument("--max-reps", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per case before it is abandoned")
    ap.add_argument(
        "--mem-limit-gb",
        type=float,
        default=None,
        help="skip dense/original cases estimated above this (default: 70%% of available RAM, 90%% of GPU memory)",
    )
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<date>-<device>.json)")
    ap.add_argument("--list", action="store_true", help="print the cases and exit")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    devices = args.device.split(",") if args.device else (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    batches = [int(b) for b in args.batch.split(",")] if args.batch else [8, 64]
    workloads = default_grid(devices, batches, args.quick)
    if args.batch and not args.quick:
        workloads = [w for w in workloads if w.batch in batches]

    def described(w: Case) -> str:
        return (w.label() + " " + w.device + " " + w.dtype).lower()

    for text in args.only:
        workloads = [w for w in workloads if text.lower() in described(w)]
    if args.match:
        workloads = [w for w in workloads if any(t.lower() in described(w) for t in args.match)]
    impls = [i for i in args.impl.split(",") if i]
    bad = [i for i in impls if i not in IMPLS]
    if bad:
        raise SystemExit(f"unknown implementation(s) {bad}; choose from {IMPLS}")
    if "dense" not in impls:
        print("note: the dense oracle is not among --impl; ratios against it are omitted", file=sys.stderr)
    cases = expand(workloads, impls)
    if args.list:
        for c in cases:
            print(c.label(), c.device, c.dtype, c.impl)
        return 0
    opts = {
        "threads": args.threads,
        "min_time": 0.2 if args.quick else args.min_time,
        "max_reps": 2 if args.quick else args.max_reps,
        "modes": args.modes.split(","),
    }
    if args.load < 0:
        raise SystemExit(f"--load expects a number of competitor processes >= 0, got {args.load}")
    env = environment(devices)
    env["threads"] = args.threads or env["threads"]  # what every case ran with
    env["load_processes"] = args.load
    env["sgemm_flops_per_s"] = sgemm_rate(env["threads"], size=256 if args.quick else 2048)
    print(
        f"# {len(cases)} cases on {', '.join(devices)}; torch {env['torch']}, python {env['python']}, "
        f"{env['cpu']} ({env['cpu_count']} cores), commit {str(env['git_commit'])[:10]}",
        flush=True,
    )
    shape_cache: dict = {}
    rows = []
    t_start = time.perf_counter()
    for i, c in enumerate(cases):
        wk = c.workload_key()
        if wk not in shape_cache:
            shape_cache[wk] = attention_shapes(c)
        shapes, params, other = shape_cache[wk]
        f_fwd, f_train = flops(c, shapes, other)
        u_fwd, u_train = useful_flops(c, shapes, other)
        need = memory_estimate(c, shapes, train="train" in opts["modes"])
        limit = mem_limit_bytes(c.device, args.mem_limit_gb or (0.25 if args.quick else None))
        if need > limit:
            r = {"status": f"skipped: needs ~{fmt_bytes(need)} (limit {fmt_bytes(limit)})"}
        else:
            r = run_case(c, opts, args.timeout, args.load)
        rate = env["sgemm_flops_per_s"] if c.device == "cpu" else None
        r.update(
            case=dataclasses.asdict(c),
            params=params,
            flops_infer=f_fwd,
            flops_train=f_train,
            useful_flops_infer=u_fwd,
            useful_flops_train=u_train,
            floor_infer_s=u_fwd / rate if rate else None,
            floor_train_s=u_train / rate if rate else None,
            estimated_score_bytes=need,
        )
        rows.append(r)
        msg = (
            r["status"]
            if r["status"] != "ok"
            else "  ".join(
                f"{m} {r[m]['time_s'] * 1e3:.1f} ms {fmt_bytes(r[m]['peak_bytes'])}"
                for m in ("infer", "train")
                if m in r
            )
        )
        print(
            f"[{i + 1}/{len(cases)} {time.perf_counter() - t_start:.0f}s] {c.label()} {c.device} {c.dtype} "
            f"{c.impl}: {msg}",
            flush=True,
        )
    text = table(rows)
    summ = summary(rows)
    print()
    print(text)
    print()
    print(summ)
    out = (
        Path(args.out)
        if args.out
        else ROOT
        / "results"
        / (_dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{'-'.join(devices)}{'-quick' if args.quick else ''}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    env["elapsed_s"] = time.perf_counter() - t_start
    env["memory_method"] = (
        "CPU: peak RSS (getrusage ru_maxrss) minus RSS before the first call, each case in its "
        "own process, inference measured before training; CUDA: max_memory_allocated minus "
        "allocated before the first call"
    )
    env["flops_method"] = (
        "direct-algorithm count (projections, content/positional/group scores, ~5 FLOPs per "
        "softmax score, weighted sum over all |H|·Gq·Gk·K probabilities) plus 1x1 convs/linears; "
        "training = 3 × forward. useful_flops_*: the two-level algorithm's unavoidable work "
        "(benchmarks.cases.useful_layer_flops); floor_*_s = useful FLOPs / sgemm_flops_per_s, the rate of "
        "a large float32 matrix product measured with the same threads at the start of the run"
    )
    out.write_text(json.dumps({"environment": env, "results": rows, "table": text, "summary": summ}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
