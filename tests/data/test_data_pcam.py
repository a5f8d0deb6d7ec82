import io
import pickle
import sys

import numpy as np
import pytest
import torch

import gsa.data.download as download_mod
import gsa.data.pcam as pcam
from gsa import data
from gsa.data import DataError
from gsa.errors import MissingDependencyError


@pytest.fixture
def pcam_h5(tmp_path, patch_checksums, pcam_builder):
    build, mutator = pcam_builder
    d = tmp_path / "pcam_h5"
    built = build(d)
    patch_checksums(pcam, mutator(built["md5"]))
    return d, built


def test_pcam_h5_items(pcam_h5):
    d, built = pcam_h5
    sizes = {s: len(built["arrays"][s][1]) for s in ("train", "valid", "test")}
    for split, n in sizes.items():
        ds = data.get_dataset("pcam", split, data_dir=d)
        assert len(ds) == n
        np.testing.assert_array_equal(ds.labels.numpy(), built["arrays"][split][1])  # y[idx, 0, 0, 0]
    ds = data.get_dataset("pcam", "valid", data_dir=d)
    x, y = ds[2]
    assert x.shape == (3, 96, 96) and x.dtype == torch.float32 and y in (0, 1)
    expected = torch.from_numpy(built["arrays"]["valid"][0][2]).permute(2, 0, 1).float() / 255
    assert torch.equal(x, expected)
    assert torch.all(x[:, 0, 0] == 1.0)  # 255 -> exactly 1.0
    assert x.min() >= 0 and x.max() <= 1
    assert ds[-1][1] == built["arrays"]["valid"][1][-1]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_pcam_lazy_and_worker_safe(pcam_h5):
    d, _ = pcam_h5
    ds = data.get_dataset("pcam", "train", data_dir=d)
    assert ds._file is None  # nothing opened until an item is read
    first = ds[0][0]
    assert ds._file is not None
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    assert clone._file is None and torch.equal(clone[0][0], first)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    xs = torch.cat([b[0] for b in loader])
    assert xs.shape == (len(ds), 3, 96, 96) and torch.equal(xs[0], first)
    ds.close()


def test_pcam_from_gz_is_decompressed_once(tmp_path, patch_checksums, pcam_builder):
    build, mutator = pcam_builder
    d = tmp_path / "gz"
    built = build(d, gz=True)
    patch_checksums(pcam, mutator(built["md5"]))
    ds = data.get_dataset("pcam", "test", data_dir=d)
    assert len(ds) == len(built["arrays"]["test"][1])
    h5 = d / "camelyonpatch_level_2_split_test_x.h5"
    assert h5.is_file() and (d / "camelyonpatch_level_2_split_test_x.h5.gz").is_file()
    mtime = h5.stat().st_mtime_ns
    data.get_dataset("pcam", "test", data_dir=d)
    assert h5.stat().st_mtime_ns == mtime  # not decompressed again
    assert not list(d.glob("*.part"))


def test_pcam_accepts_either_valid_test_mapping(tmp_path, patch_checksums, pcam_builder):
    build, mutator = pcam_builder
    d = tmp_path / "swap"
    built = build(d, gz=True)
    # like the real table: README mapping has valid/test swapped, the users' mapping is right
    patch_checksums(pcam, mutator(built["md5"], readme_only_swapped=True))
    assert len(data.get_dataset("pcam", "valid", data_dir=d)) == 4
    # and if every table had them swapped, the files are still accepted (disputed mapping)
    d2 = tmp_path / "swap2"
    built2 = build(d2, gz=True)
    patch_checksums(pcam, mutator(built2["md5"], swap_valid_test=True))
    assert len(data.get_dataset("pcam", "test", data_dir=d2)) == 5


def test_pcam_corrupt_gz(tmp_path, patch_checksums, pcam_builder):
    build, mutator = pcam_builder
    d = tmp_path / "bad"
    built = build(d, gz=True)
    patch_checksums(pcam, mutator(built["md5"]))
    gz = d / "camelyonpatch_level_2_split_valid_x.h5.gz"
    raw = bytearray(gz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    gz.write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        data.get_dataset("pcam", "valid", data_dir=d)
    msg = str(e.value)
    assert str(gz) in msg and built["md5"][gz.name] in msg and "zenodo.org/record/2546921" in msg
    assert not (d / "camelyonpatch_level_2_split_valid_x.h5").exists()


def test_pcam_corrupt_h5(pcam_h5):
    d, built = pcam_h5
    y = d / "camelyonpatch_level_2_split_test_y.h5"
    raw = bytearray(y.read_bytes())
    raw[-1] ^= 0xFF
    y.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt") as e:
        data.get_dataset("pcam", "test", data_dir=d)
    assert str(y) in str(e.value)


def test_pcam_forged_stamp_cannot_vouch_for_a_corrupt_h5(pcam_h5):
    """A stamp naming the md5 of a tampered file (size and mtime kept) is not believed."""
    import hashlib
    import json
    import os

    d, built = pcam_h5
    y = d / "camelyonpatch_level_2_split_test_y.h5"
    st = y.stat()
    raw = bytearray(y.read_bytes())
    raw[-1] ^= 0xFF
    y.write_bytes(bytes(raw))
    os.utime(y, ns=(st.st_atime_ns, st.st_mtime_ns))
    forged = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "md5": [hashlib.md5(raw).hexdigest()],
        "sha1": [],
        "expected_size": None,
    }
    (d / ".gsa-verified.json").write_text(json.dumps({y.name: forged}))
    with pytest.raises(DataError, match="corrupt") as e:
        data.get_dataset("pcam", "test", data_dir=d)
    assert str(y) in str(e.value)


def test_pcam_missing_and_no_arrays(tmp_path):
    with pytest.raises(DataError) as e:
        data.get_dataset("pcam", "train", data_dir=tmp_path)
    msg = str(e.value)
    assert "camelyonpatch_level_2_split_train_x.h5" in msg and "--download" in msg and str(tmp_path) in msg
    with pytest.raises(ValueError, match="DataLoader"):
        data.arrays("pcam", "train", data_dir=tmp_path)
    assert not data.in_memory("pcam") and data.in_memory("rotmnist-mini")


def test_pcam_download(tmp_path, patch_checksums, pcam_builder, monkeypatch):
    build, mutator = pcam_builder
    src = tmp_path / "server"
    built = build(src, gz=True)
    patch_checksums(pcam, mutator(built["md5"]))
    urls = []

    def fake_open(url, timeout=60.0):
        urls.append(url)
        name = url.rsplit("/", 1)[1].split("?")[0]
        return io.BytesIO((src / name).read_bytes())

    monkeypatch.setattr(download_mod, "open_url", fake_open)
    dest = tmp_path / "dl"
    ds = data.get_dataset("pcam", "valid", data_dir=dest, download=True)
    assert len(ds) == 4
    assert urls == [pcam.PCAM_URL.format(name=f"camelyonpatch_level_2_split_valid_{k}.h5.gz") for k in "xy"]


def test_pcam_info():
    info = data.info("pcam")
    assert info.num_classes == 2 and info.in_channels == 3 and info.image_size == (96, 96)


def test_pcam_without_h5py_names_the_extra(pcam_h5, monkeypatch):
    d, _ = pcam_h5
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingDependencyError, match=r'PCam dataset needs h5py, .*"gsa-nets\[train\]"'):
        data.get_dataset("pcam", "train", data_dir=d)
