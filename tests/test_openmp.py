"""gsa.openmp: passive OpenMP waiting unless the environment (or an earlier torch import) decided."""

import os
import subprocess
import sys

from gsa import openmp


def test_sets_passive_waiting_when_nothing_decided():
    env: dict = {}
    assert openmp.configure(env, modules={})
    assert env["OMP_WAIT_POLICY"] == openmp.DEFAULT_POLICY == "PASSIVE"


def test_the_environment_wins():
    for env in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "100000"}, {openmp.OPT_OUT: "0"}):
        before = dict(env)
        assert not openmp.configure(env, modules={})
        assert env == before


def test_too_late_once_torch_is_imported():
    env: dict = {}
    assert not openmp.configure(env, modules={"torch": object()})
    assert env == {}


def _policy_in_fresh_process(code: str, **extra) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", openmp.OPT_OUT)}
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-1000:]
    return out.stdout.strip()


def test_import_gsa_first_sets_the_policy_before_torch_loads():
    code = "import os, gsa, gsa.openmp as o; print(os.environ.get('OMP_WAIT_POLICY'), '|', o.wait_policy())"
    assert _policy_in_fresh_process(code) == "PASSIVE | PASSIVE (set by gsa)"


def test_torch_first_is_reported_and_left_alone():
    code = "import os, torch, gsa, gsa.openmp as o; print(os.environ.get('OMP_WAIT_POLICY'), '|', o.wait_policy())"
    assert _policy_in_fresh_process(code) == "None | OpenMP default (spinning): torch was imported before gsa"


def test_opt_out_keeps_openmp_defaults():
    code = "import os, gsa, gsa.openmp as o; print(os.environ.get('OMP_WAIT_POLICY'), '|', o.wait_policy())"
    out = _policy_in_fresh_process(code, GSA_OPENMP_DEFAULTS="0")
    assert out == "None | OpenMP default (spinning): GSA_OPENMP_DEFAULTS=0"


def test_wait_mode_names_the_policy_in_one_word():
    assert openmp.wait_mode({"OMP_WAIT_POLICY": "PASSIVE"}) == "passive"
    assert openmp.wait_mode({"OMP_WAIT_POLICY": "active"}) == "active"
    assert openmp.wait_mode({"GOMP_SPINCOUNT": "1000"}) == "spin count 1000"
    assert openmp.wait_mode({}) == "spinning"
