import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

import gsa.data.cifar10 as c10
from gsa import data
from gsa.data import DataError


def test_cifar_from_tarball(cifar_tar):
    d = cifar_tar["path"].parent
    train = data.get_dataset("cifar10", "train", data_dir=d)
    valid = data.get_dataset("cifar10", "valid", data_dir=d)
    test = data.get_dataset("cifar10", "test", data_dir=d)
    n_all = cifar_tar["train_x"].shape[0]  # 20 training images in 5 batches of 4
    assert (len(train), len(valid), len(test)) == (n_all - n_all // 10, n_all // 10, 6)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    # channel planes: first 1024 bytes red, next green, then blue; row-major 32x32
    raw = cifar_tar["train_x"][0]
    expected = torch.from_numpy(raw.reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.equal(x, expected)
    assert x[0, 0, 0] == 1.0  # a 255 pixel is exactly 1.0
    # valid is the last tenth of the training batches, in file order (fixed, not random)
    vx, vy = data.arrays("cifar10", "valid", data_dir=d)
    np.testing.assert_array_equal(vy.numpy(), cifar_tar["train_y"][-(n_all // 10) :])
    assert torch.equal(vx[-1], torch.from_numpy(cifar_tar["train_x"][-1].reshape(3, 32, 32)).float() / 255)
    np.testing.assert_array_equal(test.labels.numpy(), cifar_tar["test_y"])
    # splits are disjoint rows of the training file
    tx, _ = data.arrays("cifar10", "train", data_dir=d)
    assert tx.shape[0] + vx.shape[0] == n_all


def test_cifar_from_extracted_folder(tmp_path, patch_checksums, cifar_builder, md5):
    md5_of = md5
    built = cifar_builder(tmp_path / "data" / "cifar10", extracted=True)

    def mutate(t):
        for n in built["members"]:
            t["cifar10"]["members"][f"cifar-10-batches-py/{n}"] = {
                "md5": md5_of(built["path"] / n),
                "bytes": (built["path"] / n).stat().st_size,
            }

    patch_checksums(c10, mutate)
    c10._cifar10_cached.cache_clear()
    test = data.get_dataset("cifar10", "test", data_dir=tmp_path / "data")  # found in the cifar10/ subfolder
    assert len(test) == 6
    c10._cifar10_cached.cache_clear()


def test_cifar_corrupt_and_truncated(cifar_tar, md5):
    md5_of = md5
    path = cifar_tar["path"]
    good = path.read_bytes()
    path.write_bytes(good[:-7])
    with pytest.raises(DataError) as e:
        data.get_dataset("cifar10", "train", data_dir=path.parent)
    msg = str(e.value)
    assert str(path) in msg and "truncated" in msg and f"{len(good):,}" in msg and "--download" in msg
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(DataError) as e:
        data.get_dataset("cifar10", "train", data_dir=path.parent)
    assert "corrupt" in str(e.value) and md5_of(path) in str(e.value)


def test_cifar_refuses_non_numpy_pickles(tmp_path, patch_checksums, cifar_builder, md5):
    md5_of = md5

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    built = cifar_builder(tmp_path / "c")
    path = built["path"]
    evil = pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2)
    with tarfile.open(path, "w:gz") as tf:
        for n, b in built["members"].items():
            b = evil if n == "data_batch_1" else b
            info = tarfile.TarInfo(f"cifar-10-batches-py/{n}")
            info.size = len(b)
            tf.addfile(info, io.BytesIO(b))

    def mutate(t):
        t["cifar10"]["archive"]["md5"] = md5_of(path)
        t["cifar10"]["archive"]["bytes"] = path.stat().st_size

    patch_checksums(c10, mutate)
    c10._cifar10_cached.cache_clear()
    with pytest.raises(DataError, match="refusing"):
        data.get_dataset("cifar10", "train", data_dir=path.parent)
    c10._cifar10_cached.cache_clear()


def test_cifar_missing(tmp_path):
    with pytest.raises(DataError) as e:
        data.get_dataset("cifar10", "test", data_dir=tmp_path)
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and str(tmp_path) in msg and "--download" in msg


def test_cifar_info():
    info = data.info("cifar10")
    assert info.in_channels == 3 and info.image_size == (32, 32) and info.num_classes == 10
    assert info.class_names[0] == "airplane" and len(info.mean) == 3 and len(info.std) == 3
