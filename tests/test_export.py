"""gsa.export and ``gsa export``: every format's file gives the model's logits and keeps its invariance.

Each format is exported once per module (a tiny p4 GSA-Net, 3×3 windows, 28×28 inputs) from an
example batch of 2 and run on a batch of 3 (the batch dimension is dynamic). Tolerance: the exported
file (dense ``reference`` attention) and the model (its own backend) agree to ``ATOL`` in absolute value
(the CLI's run model: ``ATOL + RTOL·max|logit|``).
Exporting takes seconds per file: those tests are marked slow. ONNX tests need ``onnx``, ``onnxscript`` and ``onnxruntime``; they are skipped, saying so, without them.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from gsa.cli import main
from gsa.errors import ConfigError
from gsa.export import FORMATS, export, load, max_abs_difference
from gsa.groups import rotate_image
from gsa.models import create

ATOL = 1e-4
RTOL = 1e-5  # of the largest logit, for the CLI's model (its sum read-out gives logits of ~1e3)
_ONNX_MISSING = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
_PARAMS = [
    pytest.param(f, marks=pytest.mark.skipif(bool(_ONNX_MISSING), reason=f"not installed: {', '.join(_ONNX_MISSING)}"))
    if f == "onnx"
    else f
    for f in FORMATS
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny():
    torch.manual_seed(0)
    return create(
        "rotmnist", group="p4", patch_size=3, channels=6, num_heads=1, block_sizes=(1, 1), crop=0, head_init="whitening"
    ).eval()  # the default zero head would give all-zero logits


@pytest.fixture(scope="module")
def model():
    return _tiny()


@pytest.fixture(scope="module", params=_PARAMS)
def exported(request, model, tmp_path_factory):
    fmt = request.param
    path = tmp_path_factory.mktemp(fmt) / f"tiny{FORMATS[fmt]}"
    torch.set_num_threads(1)
    export(model, path, format=fmt, example=torch.randn(2, 1, 28, 28))
    return fmt, path


@pytest.mark.slow
def test_the_file_gives_the_models_logits_on_another_batch(exported, model):
    fmt, path = exported
    x = torch.randn(3, 1, 28, 28)
    out = load(path, format=fmt)(x)
    assert out.shape == (3, 10)
    with torch.no_grad():
        expected = model(x)
    assert expected.std() > 100 * ATOL  # logits that differ: the comparison means something
    torch.testing.assert_close(out, expected, rtol=0, atol=ATOL)
    assert max_abs_difference(model, path, format=fmt, x=x) <= ATOL


@pytest.mark.slow
def test_the_exported_model_is_invariant_to_90_degree_rotations(exported):
    fmt, path = exported
    run = load(path, format=fmt)
    x = torch.randn(2, 1, 28, 28)
    logits = run(x)
    assert logits.std() > 100 * ATOL
    for angle in (90, 180, 270):
        torch.testing.assert_close(run(rotate_image(x, angle)), logits, rtol=0, atol=ATOL)


@pytest.mark.slow
def test_export_restores_the_layers_backend_and_the_training_mode(tmp_path):
    model = _tiny().train()
    before = [m.backend for m in model.modules() if isinstance(getattr(m, "backend", None), str)]
    assert before and set(before) != {"reference"}
    export(model, tmp_path / "m.pt2", format="pt2", example=torch.randn(2, 1, 28, 28))
    assert [m.backend for m in model.modules() if isinstance(getattr(m, "backend", None), str)] == before
    assert model.training


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "tflite"}, "unknown export format 'tflite'; expected one of: onnx, pt2, torchscript"),
        ({"format": "pt2", "example": torch.randn(1, 1, 28, 28)}, "needs a batch of at least 2"),
    ],
)
def test_bad_requests_are_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export(_tiny(), tmp_path / "m", **{"example": torch.randn(2, 1, 28, 28), **kwargs})


def test_a_missing_exporter_package_is_named(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"exporting to onnx needs the Python package\(s\) onnx, onnxscript, which"):
        export(_tiny(), tmp_path / "m.onnx", format="onnx", example=torch.randn(2, 1, 28, 28))


# ---------------------------------------------------------------------- gsa export
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory of a tiny rotmnist-mini GSA-Net (config.json + best.safetensors, no training)."""
    from gsa.train import checkpoint as ckpt
    from gsa.train.config import make_config
    from gsa.train.hooks import get_hooks
    from gsa.train.identity import identity_metadata

    d = tmp_path_factory.mktemp("run")
    cfg = make_config(
        "mini",
        out=str(d),
        model_args={"channels": 6, "num_heads": 1, "block_sizes": (1, 1), "crop": 0, "head_init": "whitening"},
    )
    torch.manual_seed(0)
    model = get_hooks().model_fn(cfg, get_hooks().info_fn(cfg.dataset)).eval()
    cfg.save(d)
    ckpt.save_weights(d / ckpt.BEST, model, identity_metadata(model, cfg))
    return d, model


@pytest.mark.slow
def test_cli_export_writes_a_checked_file(run_dir, tmp_path, capsys):
    d, model = run_dir
    out = tmp_path / "m.torchscript.pt"
    assert main(["export", str(d), "--format", "torchscript", "--out", str(out), "--batch-size", "3"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} ({out.stat().st_size} bytes, torchscript; input (B, 1, 28, 28)" in text
    assert "normalised with mean [0.1321] std [0.292]" in text
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
    assert expected.std() > 100 * ATOL
    tol = ATOL + RTOL * float(expected.abs().max())
    assert float(text.rsplit("=", 1)[1]) <= tol
    torch.testing.assert_close(load(out, format="torchscript")(x), expected, rtol=0, atol=tol)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "onnx", "--batch-size", "1"], "argument --batch-size: expected an integer >= 2, got '1'"),
        (["--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
    ],
)
def test_cli_refuses_bad_flags_in_one_line(run_dir, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["export", str(run_dir[0]), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_missing_exporter_package_is_one_line(run_dir, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else real(name, *a)
    )
    assert main(["export", str(run_dir[0]), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert (
        err == "gsa: error: exporting to onnx needs the Python package(s) onnx, onnxscript, which are not "
        "installed (pip install onnx onnxscript)\n"
    )
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--format", "pt2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gsa: error: ") and "no such run directory" in err and err.count("\n") == 1
