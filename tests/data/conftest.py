"""Fixtures for gsa.data tests: tiny files in the real on-disk formats, and a guard that
fails any test touching the network."""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gsa.data.checksums as checksums_mod
import gsa.data.download as download_mod


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    """No test may reach the network, and none may touch ~/.cache (the stamp key lives in a
    private ``$XDG_CACHE_HOME`` of the test's own)."""

    def refuse(url, timeout=60.0):
        raise AssertionError(f"test tried to open {url}")

    monkeypatch.setattr(download_mod, "open_url", refuse)
    monkeypatch.setenv("GSA_DATA_DIR", str(tmp_path / "default_data_dir"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def sha1_of(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def patch_checksums(monkeypatch):
    """``patch_checksums(module, mutate)``: make ``module.checksums()`` return a deep copy of
    the packaged table changed in place by ``mutate(table)``."""

    def apply(module, mutate):
        table = copy.deepcopy(checksums_mod.checksums())
        mutate(table)
        monkeypatch.setattr(module, "checksums", lambda: table)
        return table

    return apply


# --------------------------------------------------------------------------- rotated MNIST


def amat_text(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Rows of 784 pixel floats then the label, like mnist_rotation_new (row-major pixels)."""
    lines = []
    for img, lab in zip(images.reshape(len(images), -1), labels):
        vals = " ".join(f"{v:.8e}" for v in img)
        lines.append(f"{vals} {float(lab):.8e}\n")
    return "".join(lines).encode("ascii")


def rot_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, size=(n, 28, 28))
    q[:, 0, 0] = 255  # a full-intensity pixel: must stay 1.0
    q[:, 0, 1] = 0
    return (q / 255.0).astype(np.float64), rng.integers(0, 10, size=n)


@pytest.fixture
def rotmnist_files(tmp_path, monkeypatch, patch_checksums):
    """A zip with two small .amat files (14 train_valid rows: 10 train + 4 valid; 6 test),
    with the expected md5/sha1 and row counts patched to match."""
    import gsa.data.rotmnist as rm

    d = tmp_path / "rot"
    d.mkdir()
    tv_x, tv_y = rot_arrays(14, 1)
    te_x, te_y = rot_arrays(6, 2)
    zpath = d / rm.ZIP_NAME
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(rm.AMAT_TRAIN_VALID, amat_text(tv_x, tv_y))
        zf.writestr(rm.AMAT_TEST, amat_text(te_x, te_y))
    monkeypatch.setattr(rm, "ROWS", {"train_valid": 14, "test": 6})
    monkeypatch.setattr(rm, "N_VALID", 4)
    md5, sha1 = md5_of(zpath), sha1_of(zpath)

    def mutate(t):
        t["rotated_mnist"]["md5"] = md5
        t["rotated_mnist"]["sha1"] = sha1

    patch_checksums(rm, mutate)
    rm._rotmnist_arrays_cached.cache_clear()
    yield {"dir": d, "zip": zpath, "tv": (tv_x, tv_y), "test": (te_x, te_y), "md5": md5, "sha1": sha1}
    rm._rotmnist_arrays_cached.cache_clear()


# --------------------------------------------------------------------------- CIFAR-10


def cifar_batch(n: int, seed: int, label: str) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A pickled batch dict in the real layout: bytes keys, b'data' uint8 [n, 3072], b'labels' list."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[:, 0] = 255  # red (0, 0) of every image
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    obj = {
        b"batch_label": label.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }
    return pickle.dumps(obj, protocol=2), data, np.array(labels)


def build_cifar(root: Path, per_batch: int = 4, n_test: int = 6, extracted: bool = False) -> dict:
    names = [f"data_batch_{i}" for i in range(1, 6)]
    members: dict[str, bytes] = {}
    xs, ys = [], []
    for i, n in enumerate(names):
        raw, data, labels = cifar_batch(per_batch, 10 + i, f"training batch {i + 1} of 5")
        members[n] = raw
        xs.append(data)
        ys.append(labels)
    raw, test_x, test_y = cifar_batch(n_test, 99, "testing batch 1 of 1")
    members["test_batch"] = raw
    label_names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    members["batches.meta"] = pickle.dumps(
        {b"num_cases_per_batch": per_batch, b"label_names": label_names, b"num_vis": 3072}, protocol=2
    )
    root.mkdir(parents=True, exist_ok=True)
    if extracted:
        folder = root / "cifar-10-batches-py"
        folder.mkdir()
        for n, b in members.items():
            (folder / n).write_bytes(b)
        path = folder
    else:
        path = root / "cifar-10-python.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            for n, b in members.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{n}")
                info.size = len(b)
                tf.addfile(info, io.BytesIO(b))
    return {
        "path": path,
        "members": members,
        "train_x": np.concatenate(xs),
        "train_y": np.concatenate(ys),
        "test_x": test_x,
        "test_y": test_y,
    }


@pytest.fixture
def cifar_tar(tmp_path, patch_checksums):
    import gsa.data.cifar10 as c10

    built = build_cifar(tmp_path / "cifar")

    def mutate(t):
        t["cifar10"]["archive"]["md5"] = md5_of(built["path"])
        t["cifar10"]["archive"]["bytes"] = built["path"].stat().st_size

    patch_checksums(c10, mutate)
    c10._cifar10_cached.cache_clear()
    yield built
    c10._cifar10_cached.cache_clear()


# --------------------------------------------------------------------------- PCam

PCAM_SIZES = {"train": 6, "valid": 4, "test": 5}


def build_pcam(root: Path, gz: bool = False, sizes: dict | None = None) -> dict:
    """The six camelyonpatch_level_2_split_* files with real keys/dtypes/shapes
    (x uint8 [N, 96, 96, 3], y uint8 [N, 1, 1, 1]), optionally gzipped (then only the .gz
    files are left). Returns ``{"arrays": {split: (x, labels)}, "md5": {file name: md5}}``
    with the md5 of every .h5 and .h5.gz made."""
    import h5py

    sizes = sizes or PCAM_SIZES
    root.mkdir(parents=True, exist_ok=True)
    arrays, md5s = {}, {}
    for i, (split, n) in enumerate(sizes.items()):
        rng = np.random.default_rng(100 + i)
        x = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
        x[:, 0, 0, :] = 255
        y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
        for kind, arr in (("x", x), ("y", y)):
            name = f"camelyonpatch_level_2_split_{split}_{kind}.h5"
            path = root / name
            with h5py.File(path, "w") as f:
                f.create_dataset(kind, data=arr, chunks=(1,) + arr.shape[1:] if kind == "x" else None)
            md5s[name] = md5_of(path)
            if gz:
                with open(path, "rb") as src, gzip.open(root / (name + ".gz"), "wb") as dst:
                    dst.write(src.read())
                md5s[name + ".gz"] = md5_of(root / (name + ".gz"))
                path.unlink()
        arrays[split] = (x, y[:, 0, 0, 0].astype(np.int64))
    return {"arrays": arrays, "md5": md5s}


def _swap_name(name: str) -> str:
    return name.replace("_valid_", "_TMP_").replace("_test_", "_valid_").replace("_TMP_", "_test_")


def pcam_md5_mutator(md5s: dict, swap_valid_test: bool = False, readme_only_swapped: bool = False):
    """Replace the pcam md5 tables by ``md5s`` (file name -> md5).

    ``swap_valid_test``: record valid/test values under each other's names in every table.
    ``readme_only_swapped``: like the real table, the README mapping has valid/test swapped
    and the users' mapping is right.
    """

    def mutate(t):
        p = t["pcam"]
        for table in ("gz_md5_per_readme", "gz_md5_as_measured_by_users", "h5_md5_uncompressed_per_eva"):
            p[table] = {k: v for k, v in p[table].items() if k.startswith("_")}
        for name, md5 in md5s.items():
            recorded = _swap_name(name) if swap_valid_test else name
            if name.endswith(".gz"):
                p["gz_md5_per_readme"][_swap_name(recorded) if readme_only_swapped else recorded] = md5
                p["gz_md5_as_measured_by_users"][recorded] = md5
            else:
                p["h5_md5_uncompressed_per_eva"][recorded] = md5

    return mutate


# --------------------------------------------------------------------------- helpers as fixtures
# (tests get them through fixtures, not `from conftest import`, so any pytest import mode works)


@pytest.fixture
def md5():
    return md5_of


@pytest.fixture
def cifar_builder():
    return build_cifar


@pytest.fixture
def pcam_builder():
    return build_pcam, pcam_md5_mutator
