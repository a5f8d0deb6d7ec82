"""OpenMP's wait policy: passive waiting by default, so a busy machine does not multiply the step time.

PyTorch's CPU operators and gsa's native kernels run their parallel loops on one OpenMP runtime (the
``libgomp`` that PyTorch ships). By default its threads *spin* for a while at every barrier and after
every parallel region. On a machine where another process competes for the cores, the thread that holds
the last piece of work is often descheduled while its partner spins on the other core: every one of the
thousands of parallel regions of a training step then waits a scheduler time slice. Measured on a 2-core
VM under load (the group layer p4 5×5, 20×20, batch 8, training step, 2 threads): 8.4–12 s per step with
spinning, 2.6–3.3 s with passive waiting, 2.3–3.4 s with one thread (``docs/performance.md``).

``import gsa`` therefore sets ``OMP_WAIT_POLICY=PASSIVE`` in the environment **before PyTorch is imported**
(the runtime reads it once, when it is loaded), unless

* the environment already says how to wait (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set: yours wins),
* ``GSA_OPENMP_DEFAULTS=0`` is set (gsa leaves OpenMP alone), or
* PyTorch was imported before gsa (too late: the runtime has read its environment; set
  ``OMP_WAIT_POLICY=PASSIVE`` in the shell, or import gsa first).

:func:`wait_policy` says which case applies in this process; ``gsa info`` and the benchmarks record it.
"""

from __future__ import annotations

import os
import sys

__all__ = ["configure", "wait_policy", "wait_mode", "DEFAULT_POLICY", "OPT_OUT"]

#: The wait policy gsa asks for when the environment does not say.
DEFAULT_POLICY = "PASSIVE"
#: Set this environment variable to ``0`` to keep OpenMP's own defaults.
OPT_OUT = "GSA_OPENMP_DEFAULTS"

_state = {"set_by_gsa": False, "torch_first": False}


def configure(environ=None, modules=None) -> bool:
    """Set ``OMP_WAIT_POLICY`` to :data:`DEFAULT_POLICY` if nothing else decided it; return whether it did.

    ``environ``/``modules`` default to ``os.environ``/``sys.modules`` (tests pass their own)."""
    env = os.environ if environ is None else environ
    mods = sys.modules if modules is None else modules
    if env.get(OPT_OUT, "").strip() == "0" or "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return False
    if "torch" in mods:
        if environ is None:
            _state["torch_first"] = True
        return False
    env["OMP_WAIT_POLICY"] = DEFAULT_POLICY
    if environ is None:
        _state["set_by_gsa"] = True
    return True


def wait_policy() -> str:
    """How this process's OpenMP threads wait, in words: ``"PASSIVE (set by gsa)"``, ``"ACTIVE (from the
    environment)"``, ``"OpenMP default (spinning): torch was imported before gsa"``, ..."""
    env = os.environ
    if _state["set_by_gsa"]:
        return f"{DEFAULT_POLICY} (set by gsa)"
    if "OMP_WAIT_POLICY" in env:
        return f"{env['OMP_WAIT_POLICY']} (from the environment)"
    if "GOMP_SPINCOUNT" in env:
        return f"GOMP_SPINCOUNT={env['GOMP_SPINCOUNT']} (from the environment)"
    if env.get(OPT_OUT, "").strip() == "0":
        return f"OpenMP default (spinning): {OPT_OUT}=0"
    if _state["torch_first"]:
        return "OpenMP default (spinning): torch was imported before gsa"
    return "OpenMP default"


def wait_mode(environ=None) -> str:
    """How OpenMP threads wait, in one word for summaries: ``"passive"``, ``"active"``, ``"spin count N"``
    (``GOMP_SPINCOUNT``) or ``"spinning"`` (OpenMP's default)."""
    env = os.environ if environ is None else environ
    policy = env.get("OMP_WAIT_POLICY", "").strip().lower()
    if policy in ("passive", "active"):
        return policy
    if "GOMP_SPINCOUNT" in env:
        return f"spin count {env['GOMP_SPINCOUNT']}"
    return "spinning"
