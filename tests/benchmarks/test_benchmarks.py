"""The benchmark harness: the original-algorithm re-creation agrees with the dense oracle, and
``python -m benchmarks --quick`` runs end to end and writes its JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gsa.nn import GroupSelfAttention, LiftingSelfAttention

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.original import install  # noqa: E402


@pytest.mark.parametrize("lifting", [True, False])
@pytest.mark.parametrize("g", ["p4", "p4m"])
@pytest.mark.parametrize("ps", [3, None])
def test_original_algorithm_matches_dense_oracle(lifting, g, ps):
    torch.manual_seed(0)
    if lifting:
        layer = LiftingSelfAttention(g, 3, 6, num_heads=2, patch_size=ps).double()
        x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    else:
        layer = GroupSelfAttention(g, 3, 6, num_heads=2, patch_size=ps).double()
        order = layer.group.order
        x = torch.randn(2, 3, order, 7, 6, dtype=torch.float64)
    ref = layer(x, backend="dense")
    assert install(layer) == 1
    out = layer(x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_quick_benchmark_writes_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "| workload |" in p.stdout
    data = json.loads(out.read_text())
    env_d = data["environment"]
    for key in ("torch", "python", "git_commit", "cpu", "memory_method", "cpu_flags", "load_processes"):
        assert key in env_d
    assert env_d["sgemm_flops_per_s"] > 0 and env_d["load_processes"] == 0
    assert "train × floor" in p.stdout
    rows = data["results"]
    impls = {r["case"]["impl"] for r in rows}
    assert {"original", "fast", "dense"} <= impls
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 6
    for r in ok:
        for mode in ("infer", "train"):
            assert r[mode]["time_s"] > 0 and r[mode]["peak_bytes"] >= 0
        assert r["flops_train"] > r["flops_infer"] > 0
        assert 0 < r["useful_flops_train"] <= r["flops_train"]
        assert r["floor_train_s"] == pytest.approx(r["useful_flops_train"] / env_d["sgemm_flops_per_s"])
        assert 0 <= r["train"]["sys_s"] <= r["train"]["cpu_s"] + 1e-3
    # the oracle on the whole model is skipped with a memory estimate instead of being run
    skipped = [r for r in rows if r["status"].startswith("skipped: needs")]
    assert any(r["case"]["workload"] == "rotmnist" and r["case"]["impl"] == "dense" for r in skipped)


def test_useful_flops_count_the_two_level_algorithm():
    """The useful-work count is below the direct count, and is what a hand count of the two-level
    algorithm gives for a group layer (one class for p4, |H|/2 classes for p4m)."""
    from benchmarks.cases import LayerShape, layer_flops, useful_layer_flops

    s = LayerShape(False, X=2, Y=3, Gq=4, Gk=4, H=4, heads=2, d=6, c_in=5, c_out=7, p=4, g=2, K=9, classes=1)
    N = 6
    proj = 2 * N * 4 * 5 * 3 * 2 * 6 + 2 * N * 4 * 2 * 6 * 7
    per_pixel_head = (
        2 * 4 * 4 * 9 * 6  # content q·k, once for every output element
        + 2 * 4 * 4 * 9 * 4  # positional q_pos·ρ_h
        + 2 * 4 * 4 * 2  # group scores q_grp·E
        + 6 * 4 * 1 * 4 * 9  # T = C + Gt and the softmax over a_k, one class
        + 6 * 4 * 4 * 9  # L = P + lse and the softmax over slots
        + 2 * 4 * 4 * 4 * 9  # W = Σ_aq Pn·E
        + 2 * 4 * 4 * 9 * 6  # Σ W·v
    )
    assert useful_layer_flops(s) == proj + 2 * N * per_pixel_head
    assert useful_layer_flops(s) < layer_flops(s)
    dihedral = LayerShape(False, 2, 3, 8, 8, 8, 2, 6, 5, 7, 4, 2, 9, classes=4)
    one_class = LayerShape(False, 2, 3, 8, 8, 8, 2, 6, 5, 7, 4, 2, 9, classes=1)
    assert useful_layer_flops(dihedral) - useful_layer_flops(one_class) == 2 * N * 6 * 8 * 3 * 8 * 9


def test_useful_flops_of_the_rotmnist_network_are_below_the_direct_count():
    from benchmarks.cases import Case, attention_shapes, flops, useful_flops

    case = Case("rotmnist", "p4", 5, 8, 28, "fast")
    shapes, params, other = attention_shapes(case)
    assert params == 44428
    useful, direct = useful_flops(case, shapes, other), flops(case, shapes, other)
    assert useful[1] == 3 * useful[0] and 0.4 * direct[0] < useful[0] < direct[0]


def test_the_gpu_cases_of_issue_15_are_one_command(capsys):
    """rotMNIST p4 5×5 at batch 8 and 64, fp32 and bf16, fast vs flex vs triton; the CUDA-only
    implementations are dropped on the CPU."""
    from benchmarks.__main__ import main

    args = ["--only", "rotmnist p4 5x5 28x28", "--impl", "fast,flex,triton", "--list"]
    assert main(["--device", "cuda", *args]) == 0
    rows = capsys.readouterr().out.splitlines()
    want = {
        f"rotmnist p4 5x5 28x28 b{b} cuda {dt} {impl}"
        for b in (8, 64)
        for dt in ("float32", "bfloat16")
        for impl in ("fast", "flex", "triton")
    }
    assert set(rows) == want
    assert main(["--device", "cpu", *args]) == 0
    assert {r.split()[-1] for r in capsys.readouterr().out.splitlines()} == {"fast"}
