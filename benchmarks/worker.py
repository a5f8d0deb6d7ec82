"""Measure one case in a fresh process: ``python -m benchmarks.worker '<case json>' '<options json>'``.

Prints one line ``RESULT {json}``. Memory method:

* CPU — peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) minus the resident size right
  before the first measured call (after imports, model, input and optimizer exist). The inference
  calls run first, so the inference figure is the peak of inference alone; the training figure is
  the peak of the whole process after that (training peaks are larger). Each case runs in its own
  process, so peaks never carry over between cases.
* CUDA — ``torch.cuda.max_memory_allocated()`` minus the memory allocated before the first call.

Times are medians over repetitions after one warm-up call (the count adapts to ``min_time``);
``cpu_s`` is the process CPU time per repetition (all threads), useful when the machine is shared;
``sys_s`` the part of it spent in the kernel (page faults of large temporaries show up here).
A training step is forward, loss, backward and (for models) one Adam step.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import sys
import time


def _cpu_times() -> tuple[float, float]:
    """``(cpu, system)`` seconds of this process so far, both from ``getrusage``: one clock, so the
    system part never exceeds the total (``os.times`` counts 10 ms ticks, ``process_time`` does not)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_stime


def _rss() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def main(argv: list[str]) -> int:
    case_d, opts = json.loads(argv[0]), json.loads(argv[1])
    # isort: off
    import gsa  # before torch: gsa chooses OpenMP's wait policy when the environment does not (gsa.openmp)
    import torch

    # isort: on

    if opts.get("threads"):
        torch.set_num_threads(int(opts["threads"]))
    from .cases import Case, build, example_input

    case = Case(**case_d)
    torch.manual_seed(0)
    dev = torch.device(case.device)
    cuda = dev.type == "cuda"
    model = build(case).to(dev)
    x = example_input(case, model).to(dev)
    y = torch.randint(0, getattr(getattr(model, "config", None), "num_classes", 2), (case.batch,), device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4) if case.is_model else None
    amp = case.dtype == "bfloat16"

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    def infer():
        model.eval()
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            model(x)

    def train():
        model.train()
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        if case.is_model:
            loss = torch.nn.functional.cross_entropy(out.float(), y)
        else:
            loss = out.float().square().mean()
        loss.backward()
        if opt is not None:
            opt.step()

    def measure(fn):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        first = time.perf_counter() - t0
        c0, s0 = _cpu_times()
        reps = max(1, min(int(opts.get("max_reps", 5)), math.ceil(float(opts.get("min_time", 2.0)) / max(first, 1e-6))))
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        c1, s1 = _cpu_times()
        return statistics.median(ts), first, reps, (c1 - c0) / reps, (s1 - s0) / reps

    res = {"case": case_d}
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = _rss()
    for name, fn in (("infer", infer), ("train", train)):
        if name not in opts.get("modes", ("infer", "train")):
            continue
        t, first, reps, cpu_s, sys_s = measure(fn)
        if cuda:
            peak = torch.cuda.max_memory_allocated(dev) - base
        else:
            peak = max(0.0, _maxrss() - base)
        res[name] = {"time_s": t, "first_s": first, "reps": reps, "cpu_s": cpu_s, "sys_s": sys_s, "peak_bytes": peak}
    res["rss_baseline_bytes"] = None if cuda else base
    res["openmp_wait"] = gsa.openmp.wait_policy()
    print("RESULT " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
