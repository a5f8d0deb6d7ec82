import hashlib
import importlib.util
import io
import logging
import math
import os
import warnings
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

import gsa.data.download as download_mod
import gsa.data.rotmnist as rm
from gsa import data, groups
from gsa.data import DataError
from gsa.data import _rotmnist_mini_meta as meta

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- embedded set


def test_embedded_file_matches_recorded_sha256():
    raw = resources.files("gsa.data").joinpath("assets", "rotmnist_mini.npz").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == meta.ROTMNIST_MINI_SHA256
    assert len(raw) == meta.ROTMNIST_MINI_BYTES
    assert len(raw) < 3_000_000
    for name in ("ROTMNIST_MINI.md", "checksums.json"):
        assert resources.files("gsa.data").joinpath("assets", name).is_file()
    md = resources.files("gsa.data").joinpath("assets", "ROTMNIST_MINI.md").read_text("utf-8")
    assert "NOT the rotated-MNIST benchmark" in md and "CC BY-SA 3.0" in md and meta.ROTMNIST_MINI_SHA256 in md


def test_embedded_splits_sizes_dtypes_disjoint():
    a = rm.mini_arrays()
    sizes = {"train": 7000, "valid": 1000, "test": 2000}
    seen = []
    for split, n in sizes.items():
        x, y, ang, idx = (a[f"{split}_{k}"] for k in ("x", "y", "angle", "index"))
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
        assert ang.shape == (n,) and ang.min() >= 0 and ang.max() < 2 * math.pi
        assert idx.shape == (n,)
        seen.append(idx)
    allidx = np.concatenate(seen)
    assert np.array_equal(np.sort(allidx), np.arange(10000))  # every digit in exactly one split
    assert a["train_x"].max() == 255  # full-intensity pixels survive (no wrap-around to 0)


def test_embedded_dataset_items_and_arrays():
    ds = data.get_dataset("rotmnist-mini", "train")
    assert len(ds) == 7000
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    xs, ys = data.arrays("rotmnist-mini", "test")
    assert xs.shape == (2000, 1, 28, 28) and xs.dtype == torch.float32 and ys.dtype == torch.int64
    assert xs.min() >= 0 and xs.max() == 1.0
    torch.testing.assert_close(xs[5], data.get_dataset("rotmnist-mini", "test")[5][0])
    info = data.info("rotmnist-mini")
    assert info.in_channels == 1 and info.num_classes == 10 and info.image_size == (28, 28)
    mean = data.arrays("rotmnist-mini", "train")[0].mean().item()
    assert info.mean[0] == pytest.approx(mean, abs=1e-3)


def test_embedded_digits_are_rotated_mnist_digits():
    """Un-rotating a digit brings it back close to the source MNIST digit (when available)."""
    src = REPO.parent / "shared" / "data" / "mnist_test.npz"
    if not src.is_file():
        pytest.skip("MNIST source not available")
    images = np.load(src)["images"]
    a = rm.mini_arrays()
    x = torch.from_numpy(a["valid_x"][:50].astype(np.float64) / 255)[:, None]
    back = groups.rotate_image(x, -torch.rad2deg(torch.from_numpy(a["valid_angle"][:50])))
    orig = torch.from_numpy(images[a["valid_index"][:50]].astype(np.float64) / 255)[:, None]
    centre = (slice(None), slice(None), slice(6, 22), slice(6, 22))
    err = (back - orig)[centre].abs().mean().item()
    assert err < 0.08


def test_build_script_is_deterministic(tmp_path):
    src = REPO.parent / "shared" / "data" / "mnist_test.npz"
    script = REPO / "tools" / "build_rotmnist_mini.py"
    if not (src.is_file() and script.is_file()):
        pytest.skip("MNIST source or build script not available")
    spec = importlib.util.spec_from_file_location("build_rotmnist_mini", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with np.load(src) as z:
        images, labels = z["images"], z["labels"].astype(np.int64)
    arrays = mod.build_arrays(images, labels)
    b1 = mod.npz_bytes(arrays)
    assert b1 == mod.npz_bytes({k: v.copy() for k, v in arrays.items()})
    # the arrays equal the shipped ones, built in an earlier run
    shipped = rm.mini_arrays()
    assert sorted(shipped) == sorted(arrays)
    with np.load(io.BytesIO(b1)) as z:
        for k in shipped:
            np.testing.assert_array_equal(z[k], shipped[k])


# --------------------------------------------------------------------------- real rotated MNIST


def test_rotmnist_from_zip(rotmnist_files):
    d = rotmnist_files["dir"]
    tv_x, tv_y = rotmnist_files["tv"]
    te_x, te_y = rotmnist_files["test"]
    train = data.get_dataset("rotmnist", "train", data_dir=d)
    valid = data.get_dataset("rotmnist", "valid", data_dir=d)
    test = data.get_dataset("rotmnist", "test", data_dir=d)
    assert (len(train), len(valid), len(test)) == (10, 4, 6)
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == tv_y[3]
    # first 10 rows are train, last 4 are valid; rows are reshaped row-major, no transpose
    np.testing.assert_allclose(valid[0][0][0].numpy(), tv_x[10], atol=1e-6)
    np.testing.assert_allclose(test[5][0][0].numpy(), te_x[5], atol=1e-6)
    assert valid[1][1] == tv_y[11] and test[0][1] == te_y[0]
    # 1.0 stays 1.0 (the original's (x*256).round() wrapped it to 0), 0 stays 0
    assert x[0, 0, 0] == 1.0 and x[0, 0, 1] == 0.0
    # cache written next to the zip (uint8, since values are multiples of 1/255)
    cache = d / rm.CACHE_NAME
    assert cache.is_file()
    with np.load(cache) as z:
        assert z["train_x"].dtype == np.uint8 and z["train_x"].shape == (10, 28, 28)


def test_rotmnist_cache_is_used(rotmnist_files):
    d = rotmnist_files["dir"]
    xs, _ = data.arrays("rotmnist", "train", data_dir=d)
    rotmnist_files["zip"].unlink()
    rm._rotmnist_arrays_cached.cache_clear()
    xs2, _ = data.arrays("rotmnist", "train", data_dir=d)
    assert torch.equal(xs, xs2)


def test_rotmnist_from_extracted_amat_in_subfolder(rotmnist_files, tmp_path):
    root = tmp_path / "datadir"
    sub = root / "rotmnist"
    sub.mkdir(parents=True)
    with zipfile.ZipFile(rotmnist_files["zip"]) as zf:
        zf.extractall(sub)
    test = data.get_dataset("rotmnist", "test", data_dir=root)
    assert len(test) == 6
    np.testing.assert_allclose(test[2][0][0].numpy(), rotmnist_files["test"][0][2], atol=1e-6)


def test_rotmnist_missing_data_message(tmp_path):
    with pytest.raises(DataError) as e:
        data.get_dataset("rotmnist", "train", data_dir=tmp_path)
    msg = str(e.value)
    assert rm.ZIP_NAME in msg and str(tmp_path) in msg and "--download" in msg and rm.ROTMNIST_URL in msg


def test_rotmnist_corrupt_zip(rotmnist_files):
    z = rotmnist_files["zip"]
    raw = bytearray(z.read_bytes())
    raw[100] ^= 0xFF
    z.write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        data.get_dataset("rotmnist", "train", data_dir=rotmnist_files["dir"])
    msg = str(e.value)
    assert str(z) in msg and rotmnist_files["md5"] in msg and "--download" in msg


def test_rotmnist_truncated_amat(rotmnist_files, monkeypatch):
    monkeypatch.setattr(rm, "ROWS", {"train_valid": 15, "test": 6})
    with pytest.raises(DataError, match="expected 15"):
        data.get_dataset("rotmnist", "train", data_dir=rotmnist_files["dir"])


def test_parse_amat_malformed_row():
    bad = b"0.1 0.2 0.3\n"
    with pytest.raises(DataError, match="785"):
        rm.parse_amat(io.BytesIO(bad), name="bad.amat", expected_rows=None)


def test_rotmnist_download(rotmnist_files, monkeypatch, tmp_path):
    payload = rotmnist_files["zip"].read_bytes()
    urls = []

    class Resp(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}

    def fake_open(url, timeout=60.0):
        urls.append(url)
        return Resp(payload)

    monkeypatch.setattr(download_mod, "open_url", fake_open)
    target = tmp_path / "fresh"
    ds = data.get_dataset("rotmnist", "valid", data_dir=target, download=True)
    assert urls == [rm.ROTMNIST_URL]
    assert len(ds) == 4 and (target / rm.ZIP_NAME).read_bytes() == payload
    assert not [p for p in os.listdir(target) if p.endswith(".part")]


def test_an_unwritable_parse_cache_is_logged_not_warned(tmp_path, caplog):
    path = tmp_path / "missing-dir" / rm.CACHE_NAME
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a diagnostic for the log, not a warning
        with caplog.at_level(logging.WARNING, logger="gsa"):
            rm._write_cache(path, {"x": np.zeros(2)})
    assert [r.name for r in caplog.records] == ["gsa"] and "could not write the parsed cache" in caplog.text
