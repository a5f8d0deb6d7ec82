"""What the benchmark machine is and can do: CPU flags, a measured matrix-product rate, and competitor load.

* :func:`cpu_flags` — the SIMD flags of the CPU (``/proc/cpuinfo``) and the ISA PyTorch dispatches to.
* :func:`sgemm_rate` — FLOP/s of a large float32 matrix product with the benchmark's thread count: the
  "floor" the table compares each case with (a case's useful-work FLOPs divided by this rate is the time
  a perfect implementation would take at BLAS speed).
* :class:`Competitors` — ``--load N``: N CPU-bound processes running beside a case, so that figures "on a
  busy machine" are reproducible rather than whatever else happened to run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

#: SIMD-related flags worth recording (the kernels' speed depends on them).
SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_bf16",
    "avx512_vnni",
    "amx_tile",
    "amx_bf16",
)


def portable(text: str) -> str:
    """``text`` without this machine's paths: the working directory's prefix removed, the home
    directory written ``~`` (the reference JSON files are committed)."""
    import os
    from pathlib import Path

    text = text.replace(os.getcwd() + os.sep, "")
    home = str(Path.home())
    return text.replace(home, "~") if home not in ("", os.sep) else text


def cpu_flags() -> dict:
    """``{"simd": [...], "torch_capability": "AVX2"}``: the CPU's SIMD flags among :data:`SIMD_FLAGS`
    (empty when ``/proc/cpuinfo`` cannot be read) and the capability PyTorch's CPU kernels use."""
    import torch

    flags: set = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - older torch
        capability = None
    return {"simd": [f for f in SIMD_FLAGS if f in flags], "torch_capability": capability}


def sgemm_rate(threads: int | None = None, size: int = 2048, seconds: float = 1.0) -> float:
    """FLOP/s of ``size×size @ size×size`` float32 products (median of repetitions filling ``seconds``
    after one warm-up) on the CPU with ``threads`` torch threads (default: torch's current count)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        a = torch.randn(size, size)
        b = torch.randn(size, size)
        torch.mm(a, b)
        times: list[float] = []
        t_end = time.perf_counter() + seconds
        while not times or (time.perf_counter() < t_end and len(times) < 50):
            t0 = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t0)
        return 2.0 * size**3 / statistics.median(times)
    finally:
        torch.set_num_threads(before)


_SPIN = "x = 0\nwhile True:\n    x += 1\n"


class Competitors:
    """Context manager: ``n`` single-threaded CPU-bound processes (a Python busy loop) for its duration.

    ``with Competitors(1): run_case(...)`` measures a case with one other busy process on the machine.
    The processes are killed on exit, also when the body raises."""

    def __init__(self, n: int):
        if n < 0:
            raise ValueError(f"--load expects a number of competitor processes >= 0, got {n}")
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Competitors":
        for _ in range(self.n):
            self.procs.append(
                subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        if self.n:
            time.sleep(0.2)  # let them reach the busy loop before the case starts
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs.clear()

    def alive(self) -> int:
        """How many competitors are running now."""
        return sum(p.poll() is None for p in self.procs)
