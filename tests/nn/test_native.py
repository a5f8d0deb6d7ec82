"""The native CPU kernels (``gsa.nn.native``) against the fast core's PyTorch implementation.

Both implement the same chunk mathematics; inside ``masks.hash_masks()`` the PyTorch path draws its
dropout masks from the kernels' counter-based hash, so outputs and gradients agree to round-off, with and
without attention dropout.
"""

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

from gsa.nn import GroupSelfAttention, LiftingSelfAttention, masks, native

pytestmark = pytest.mark.skipif(not native.available(), reason=f"no native kernels here ({native.status()})")

CASES = [
    (LiftingSelfAttention, "p4", 5),
    (LiftingSelfAttention, "p4m", None),
    (GroupSelfAttention, "p4", 5),
    (GroupSelfAttention, "p4m", 3),  # dihedral: two conjugation classes (U = 2)
    (GroupSelfAttention, "p8", None),
    (GroupSelfAttention, "z2", 3),
    (GroupSelfAttention, "p3m", 3),  # odd dihedral: every output element its own class (U = |H| = 6)
    (LiftingSelfAttention, "p6", None),
]


def _close(a, b, tol):
    """Agreement relative to the tensor's scale (at least 1: some parameter gradients are exactly zero)."""
    assert (a - b).abs().max() <= tol * b.abs().max().clamp_min(1.0)


def _run(layer, x, w, backend):
    x = x.detach().requires_grad_()
    torch.manual_seed(11)  # the per-call dropout seed
    out = layer(x, backend=backend)
    grads = torch.autograd.grad((out * w).sum(), [x, *layer.parameters()], allow_unused=True)
    return out, grads


@pytest.mark.parametrize("cls,g,ps", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_native_matches_pytorch_path(cls, g, ps, dtype, dropout):
    torch.manual_seed(0)
    layer = cls(g, 3, 6, num_heads=2, patch_size=ps, attention_dropout=dropout, chunk_elements=3000).to(dtype)
    layer.train()
    shape = (2, 3, 7, 6) if cls is LiftingSelfAttention else (2, 3, layer.group.order, 7, 6)
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn(layer(x).shape, dtype=dtype)
    out_n, g_n = _run(layer, x, w, "native")  # the chunked core (auto picks the fused kernel for windows)
    with native.disabled(), masks.hash_masks():
        assert not native.usable(x)
        out_t, g_t = _run(layer, x, w, "pytorch")
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    _close(out_n, out_t, tol)
    for a, b in zip(g_n, g_t):
        assert (a is None) == (b is None)
        if a is not None:
            _close(a, b, tol)
    if dropout:  # masks are really applied (and identical in both paths, or the outputs would differ)
        layer.eval()
        assert not torch.allclose(layer(x), out_n)


def test_float32_softmax_is_accurate():
    """The float32 kernels use a polynomial exp; compare with the float64 oracle."""
    torch.manual_seed(0)
    layer = GroupSelfAttention("p4", 4, 8, num_heads=2, patch_size=5)
    x = 3 * torch.randn(2, 4, 4, 9, 9)
    ref = layer.double()(x.double(), backend="reference")
    for backend in ("native", "fused"):
        out = layer.float()(x, backend=backend)
        err = (out.double() - ref).abs().max() / ref.abs().max()
        assert err < 1e-5, backend


def test_inference_without_grad_uses_the_same_kernels():
    torch.manual_seed(0)
    layer = GroupSelfAttention("p4m", 3, 6, num_heads=2, patch_size=3).double().eval()
    x = torch.randn(1, 3, 8, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        a = layer(x, backend="native")
        with native.disabled():
            b = layer(x, backend="pytorch")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_fold_add_matches_unfold_adjoint():
    from gsa.nn.neighbourhood import Local

    nb = Local(5)
    plan = nb.plan(11, 9, 0, 11, 4, 4, 4, tiles=(2, 2))
    Bc, G, c = 3, 4, 5
    rows, cols = plan.nx * plan.Tx + 2 * plan.r, plan.ny * plan.Ty + 2 * plan.r
    tiles = torch.randn(Bc * plan.nx * plan.ny, G * plan.Wx * plan.Wy, c, dtype=torch.float64)
    ref = plan.fold_keys(tiles, Bc, G)
    big = torch.randn(Bc + 2, rows + 3, cols, G, c, dtype=torch.float64)
    dst = big[1 : Bc + 1, 2 : rows + 2]  # a strided view, as in the backward pass
    expect = dst + ref
    native.fold_add(tiles, dst, plan.nx, plan.ny, G, plan.Wx, plan.Wy, plan.Tx, plan.Ty)
    torch.testing.assert_close(dst, expect, rtol=0, atol=1e-13)


def test_counter_masks_match_between_kernel_and_reference():
    """The weights kernel with all-ones probabilities returns the keep-mask sums of the reference hash."""
    Gq, H, Gk, k = 2, 3, 2, 3
    pix = (4, 5)
    Pn = torch.ones(*pix, Gq, H, k, k, dtype=torch.float64)
    E = torch.ones(*pix, Gq, 1, Gk, k, k, dtype=torch.float64)
    W = torch.empty(*pix, H, Gk, k, k, dtype=torch.float64)
    params = masks.dropout_params(0.5, seed=123, cid=7)
    native.weights(Pn, E, W, None, params, 1.0)
    m = masks.keep_mask(params, 0, (20, Gq, H, Gk, k, k), "cpu").to(torch.float64)
    torch.testing.assert_close(W, m.sum(1).view_as(W), rtol=0, atol=0)


def test_disabled_by_environment(tmp_path):
    code = "from gsa.nn import native; print(native.available(), native.status())"
    env = {"GSA_NATIVE": "0", "GSA_CACHE_DIR": str(tmp_path), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.startswith("False native kernels off: disabled by GSA_NATIVE=0")


def test_build_failure_falls_back_with_a_warning(tmp_path):
    code = (
        "import warnings, torch\n"
        "from gsa.nn import native, GroupSelfAttention\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    ok = native.available()\n"
        "layer = GroupSelfAttention('p4', 2, 6, num_heads=1, patch_size=3)\n"
        "y = layer(torch.randn(1, 2, 4, 5, 5))\n"
        "print(ok, len(w), 'could not compile' in str(w[0].message), tuple(y.shape))\n"
    )
    env = {"CXX": str(tmp_path / "no-such-compiler"), "GSA_CACHE_DIR": str(tmp_path / "cache"), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "1", "True", "(1,", "6,", "4,", "5,", "5)"]


# ------------------------------------------------------------------------------------------------
# the kernel cache: private, hash-checked, one build for concurrent processes


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """A kernel cache built once for this module (one real compile) in a fresh ``GSA_CACHE_DIR``."""
    cache = tmp_path_factory.mktemp("kernels") / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GSA_CACHE_DIR", str(cache))
        lib = native._build()
    return cache, lib.name


@pytest.fixture
def cache_copy(built_cache, tmp_path, monkeypatch):
    """A private copy of the built cache as ``GSA_CACHE_DIR``, and the list of compiler commands run
    (a fake compiler that "builds" by copying the genuine library)."""
    cache, name = built_cache
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    monkeypatch.setenv("GSA_CACHE_DIR", str(copy))
    calls = []

    def fake_compiler(cmd, **kwargs):
        calls.append(cmd)
        shutil.copyfile(cache / name, cmd[cmd.index("-o") + 1])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(native.subprocess, "run", fake_compiler)
    return copy, copy / name, calls


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cache_is_private_and_records_the_hash(built_cache):
    cache, name = built_cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert (cache / (name + ".sha256")).read_text().strip() == _sha(cache / name)
    assert not stat.S_IMODE((cache / name).stat().st_mode) & 0o022


def test_good_cache_is_reused_without_rebuilding(cache_copy, recwarn):
    cache, lib, calls = cache_copy
    assert native._build() == lib
    assert calls == [] and not [w for w in recwarn if "gsa" in str(w.message)]


def test_builds_and_reuses_are_logged_to_the_gsa_logger(cache_copy, caplog):
    cache, lib, calls = cache_copy
    with caplog.at_level(logging.DEBUG, logger="gsa"):
        native._build()
        lib.unlink()
        native._build()
    said = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        ("gsa", "DEBUG", f"native kernels: using {lib}"),
        ("gsa", "INFO", f"native kernels: compiling _kernels.cpp into {cache} (once per compiler and CPU)"),
    ]


@pytest.mark.parametrize("plant", ["text", "changed bytes", "no record", "group-writable"])
def test_planted_library_is_rebuilt_not_loaded(cache_copy, plant):
    cache, lib, calls = cache_copy
    genuine = lib.read_bytes()
    if plant == "text":
        lib.write_text("not a library\n")
    elif plant == "changed bytes":
        changed = bytearray(genuine)
        changed[len(changed) // 2] ^= 0xFF
        lib.write_bytes(bytes(changed))
    elif plant == "no record":
        (cache / (lib.name + ".sha256")).unlink()
    else:
        lib.chmod(0o777)
    assert native._build() == lib
    assert len(calls) == 1  # rebuilt (here: the fake compiler), never reused
    assert lib.read_bytes() == genuine and (cache / (lib.name + ".sha256")).read_text().strip() == _sha(lib)


@pytest.mark.parametrize("why", ["world-writable", "someone else's"])
def test_unsafe_cache_dir_is_refused(cache_copy, monkeypatch, why):
    cache, lib, calls = cache_copy
    monkeypatch.setitem(native._state, "scratch", None)
    if why == "world-writable":
        cache.chmod(0o777)
    else:
        uid = cache.stat().st_uid
        monkeypatch.setattr(os, "geteuid", lambda: uid + 1)
    with pytest.warns(RuntimeWarning, match="native kernel cache refused") as w:
        path = native._build()
    assert str(cache) in str(w[0].message) and len(str(w[0].message).splitlines()) == 1
    assert path.parent != cache and len(calls) == 1  # built elsewhere: nothing in the cache was used
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    shutil.rmtree(path.parent)


@pytest.mark.parametrize("where", ["private cache, hash mismatch", "world-writable cache, matching hash"])
def test_planted_library_constructor_never_runs(built_cache, tmp_path, where):
    """The attack of issue 13: a library with a constructor, planted under the expected name."""
    cache, name = built_cache
    evil_src = tmp_path / "evil.cpp"
    marker = tmp_path / "constructor-ran"
    evil_src.write_text(
        textwrap.dedent(f"""
        #include <cstdio>
        __attribute__((constructor)) static void planted() {{
            if (FILE* f = std::fopen("{marker}", "w")) std::fclose(f);
        }}
        extern "C" int gsa_abi_version() {{ return {native._ABI}; }}
    """)
    )
    planted = tmp_path / "cache"
    shutil.copytree(cache, planted)
    subprocess.run(
        [os.environ.get("CXX", "c++"), "-shared", "-fPIC", str(evil_src), "-o", str(planted / name)],
        check=True,
        capture_output=True,
    )
    if where.startswith("world-writable"):
        (planted / (name + ".sha256")).write_text(_sha(planted / name) + "\n")
        planted.chmod(0o777)
    fake_bin = tmp_path / "bin"  # a "c++" that fails: same cache key, but nothing gets rebuilt
    fake_bin.mkdir()
    (fake_bin / "c++").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "c++").chmod(0o755)
    env = {**os.environ, "GSA_CACHE_DIR": str(planted), "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    code = "import warnings; warnings.simplefilter('ignore'); from gsa.nn import native; print(native.available())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert not marker.exists()
    if "CXX" not in os.environ:
        assert out.stdout.split() == ["False"]  # refused, and the fake compiler could not rebuild it


def test_concurrent_builds_compile_once(tmp_path):
    """Two processes building into one empty cache at once: one compiles, the other waits and reuses it."""
    code = (
        "import subprocess\n"
        "from gsa.nn import native\n"
        "real, n = subprocess.run, []\n"
        "subprocess.run = lambda cmd, **k: n.extend(['-shared'] if '-shared' in cmd else []) or real(cmd, **k)\n"
        "path = native._build()\n"
        "print(len(n), path)\n"
    )
    env = {**os.environ, "GSA_CACHE_DIR": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert min(int(o[0]) for o in outs) == 0  # the second waited for the first's build and reused it
    assert outs[0][1] == outs[1][1]
