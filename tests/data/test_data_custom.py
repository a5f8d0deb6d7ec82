import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gsa import data
from gsa.data import DataError
from gsa.errors import MissingDependencyError


def _png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def _rgb(seed, h=8, w=6):
    a = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    a[0, 0] = 255
    return a


# --------------------------------------------------------------------------- folder


def test_folder_with_split_dirs(tmp_path):
    root = tmp_path / "imgs"
    for split, n in (("train", 3), ("valid", 1), ("test", 2)):
        for c in ("cat", "ant"):
            for i in range(n):
                _png(root / split / c / f"{i}.png", _rgb(hash((split, c, i)) % 1000))
    ds = data.get_dataset(f"folder:{root}", "train")
    assert len(ds) == 6
    x, y = ds[0]
    assert x.shape == (3, 8, 6) and x.dtype == torch.float32 and x[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert y == 0  # classes sorted: ant=0, cat=1
    assert len(data.get_dataset(f"folder:{root}", "val")) == 2 and len(data.get_dataset(f"folder:{root}", "test")) == 4
    info = data.info(f"folder:{root}")
    assert info.class_names == ("ant", "cat") and info.in_channels == 3 and info.image_size == (8, 6)
    xs, ys = data.arrays(f"folder:{root}", "test")
    assert xs.shape == (4, 3, 8, 6) and ys.tolist() == [0, 0, 1, 1]
    # pixel values are the PNG bytes / 255, channel order RGB
    img = np.array(Image.open(sorted((root / "train" / "ant").glob("*.png"))[0]))
    assert torch.equal(x, torch.from_numpy(img).permute(2, 0, 1).float() / 255)


def test_folder_without_splits_is_split_80_10_10(tmp_path):
    root = tmp_path / "flat"
    for c in ("a", "b"):
        for i in range(10):
            g = np.full((5, 5), 10 * i + (c == "b"), dtype=np.uint8)
            _png(root / c / f"{i}.png", g)
    parts = {s: data.get_dataset(f"folder:{root}", s) for s in ("train", "valid", "test")}
    assert [len(parts[s]) for s in ("train", "valid", "test")] == [16, 2, 2]
    files = [set(map(str, parts[s].paths)) for s in parts]
    assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])
    assert len(set().union(*files)) == 20
    assert parts["train"][0][0].shape == (1, 5, 5)
    again = data.get_dataset(f"folder:{root}", "test")
    assert again.paths == parts["test"].paths  # seeded


def test_folder_odd_size_and_mode_are_named(tmp_path):
    root = tmp_path / "odd"
    _png(root / "a" / "0.png", _rgb(0))
    _png(root / "a" / "1.png", _rgb(1, h=9))
    _png(root / "b" / "2.png", _rgb(2))
    with pytest.raises(DataError) as e:
        data.get_dataset(f"folder:{root}", "train")
    assert "1.png" in str(e.value) and "same size and mode" in str(e.value)
    (root / "a" / "1.png").unlink()
    _png(root / "b" / "3.png", np.zeros((8, 6), np.uint8))  # gray among RGB
    with pytest.raises(DataError, match="3.png"):
        data.info(f"folder:{root}")


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        data.get_dataset(f"folder:{tmp_path / 'nope'}", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        data.get_dataset(f"folder:{tmp_path / 'empty'}", "train")


# --------------------------------------------------------------------------- npz


def test_npz_split_keys_and_scaling(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 7, 7), dtype=np.uint8)
    x[:, 3, 3] = 255
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=x[:6],
        y_train=np.arange(6) % 3,
        x_valid=x[6:8],
        y_valid=[0, 1],
        x_test=x[8:],
        y_test=np.array([[2], [1]]),
    )
    ds = data.get_dataset(f"npz:{path}", "train")
    img, y = ds[1]
    assert img.shape == (1, 7, 7) and img[0, 3, 3] == 1.0 and y == 1  # 255 -> 1.0, never wraps to 0
    assert torch.equal(img[0], torch.from_numpy(x[1]).float() / 255)
    xs, ys = data.arrays(f"npz:{path}", "test")
    assert xs.shape == (2, 1, 7, 7) and ys.tolist() == [2, 1]
    info = data.info(f"npz:{path}")
    assert info.num_classes == 3 and info.image_size == (7, 7) and info.in_channels == 1


@pytest.mark.parametrize(
    "shape,layout",
    [((20, 9, 8), "NHW"), ((20, 9, 8, 3), "NHWC"), ((20, 3, 9, 8), "NCHW"), ((20, 9, 8, 1), "NHWC")],
)
def test_npz_layouts_with_images_labels(tmp_path, shape, layout):
    x = np.random.default_rng(1).random(shape).astype(np.float32)
    path = tmp_path / "a.npz"
    np.savez(path, images=x, labels=np.arange(20) % 4)
    parts = {s: data.get_dataset(f"npz:{path}", s) for s in ("train", "valid", "test")}
    assert [len(parts[s]) for s in ("train", "valid", "test")] == [16, 2, 2]
    c = 1 if layout == "NHW" else (shape[-1] if layout == "NHWC" else shape[1])
    assert parts["train"][0][0].shape == (c, 9, 8)
    # the first train item is one of the source images in the expected layout
    ref = torch.from_numpy(x)
    ref = ref[:, None] if layout == "NHW" else (ref.permute(0, 3, 1, 2) if layout == "NHWC" else ref)
    assert any(torch.equal(parts["train"][0][0], r) for r in ref)
    all_x = torch.cat([data.arrays(f"npz:{path}", s)[0] for s in parts])
    assert sorted(all_x.sum(dim=(1, 2, 3)).tolist()) == pytest.approx(sorted(ref.sum(dim=(1, 2, 3)).tolist()))


def test_npz_errors(tmp_path):
    p = tmp_path / "f.npz"
    np.savez(p, images=np.full((10, 4, 4), 1.5, np.float32), labels=np.zeros(10, int))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        data.get_dataset(f"npz:{p}", "train")
    q = tmp_path / "k.npz"
    np.savez(q, foo=np.zeros(3))
    with pytest.raises(DataError, match="x_train"):
        data.get_dataset(f"npz:{q}", "train")
    r = tmp_path / "i.npz"
    np.savez(r, images=np.zeros((10, 4, 4), np.int32), labels=np.zeros(10, int))
    with pytest.raises(DataError, match="uint8"):
        data.get_dataset(f"npz:{r}", "train")
    with pytest.raises(DataError, match="not found"):
        data.get_dataset(f"npz:{tmp_path / 'missing.npz'}", "train")


# --------------------------------------------------------------------------- labels, splits, statistics


def test_npz_stray_label_names_the_gap_instead_of_a_million_classes(tmp_path):
    y = np.arange(40) % 10
    y[3] = 999999
    p = tmp_path / "stray.npz"
    np.savez(p, images=np.random.default_rng(0).integers(0, 256, (40, 6, 6), dtype=np.uint8), labels=y)
    with pytest.raises(DataError) as e:
        data.info(f"npz:{p}")
    msg = str(e.value)
    assert "11 distinct labels but 1000000 classes" in msg and "largest label 999999" in msg
    assert "no image is labelled 10..999998" in msg and "\n" not in msg


def test_npz_class_names_without_images_are_named(tmp_path):
    p = tmp_path / "names.npz"
    x = np.random.default_rng(1).integers(0, 256, (12, 5, 5), dtype=np.uint8)
    np.savez(p, images=x, labels=np.arange(12) % 2, class_names=np.array(["cat", "dog", "eel"]))
    with pytest.raises(DataError, match=r"no image is labelled 2 \('eel'\)"):
        data.info(f"npz:{p}")


def test_npz_single_class_and_empty_splits_are_refused(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (12, 5, 5), dtype=np.uint8)
    one = tmp_path / "one.npz"
    np.savez(one, images=x, labels=np.full(12, 4))  # one class, and labels 0..3 without images
    with pytest.raises(DataError, match="no image is labelled 0..3"):
        data.info(f"npz:{one}")
    np.savez(one, images=x, labels=np.zeros(12, int))
    with pytest.raises(DataError, match="every training image has label 0; a classifier needs at least 2 classes"):
        data.get_dataset(f"npz:{one}", "train")
    empty = tmp_path / "empty.npz"
    y = np.arange(12) % 2
    np.savez(empty, x_train=x[:8], y_train=y[:8], x_valid=x[:0], y_valid=y[:0], x_test=x[8:], y_test=y[8:])
    with pytest.raises(DataError, match="the valid split has no images"):
        data.get_dataset(f"npz:{empty}", "test")


def test_constant_training_images_are_refused(tmp_path):
    p = tmp_path / "flat.npz"
    np.savez(p, images=np.full((12, 5, 5), 0.5, np.float32), labels=np.arange(12) % 2)
    with pytest.raises(DataError, match="std 0 in every channel"):
        data.info(f"npz:{p}")
    rgba = np.random.default_rng(3).integers(0, 256, (12, 5, 5, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # one constant channel (opaque alpha) is fine: make_prepare only centres it
    np.savez(p, images=rgba, labels=np.arange(12) % 2)
    assert data.info(f"npz:{p}").std[3] == 0.0


def test_folder_empty_class_and_single_class_are_refused(tmp_path):
    root = tmp_path / "f"
    for c in ("ant", "cat"):
        for i in range(4):
            _png(root / c / f"{i}.png", _rgb(10 * len(c) + i))
    (root / "bee").mkdir()
    with pytest.raises(DataError, match=r"no image is labelled 1 \('bee'\)"):
        data.info(f"folder:{root}")
    (root / "bee").rmdir()
    for f in (root / "cat").iterdir():
        f.unlink()
    (root / "cat").rmdir()
    with pytest.raises(DataError, match=r"every training image has label 0 \('ant'\)"):
        data.get_dataset(f"folder:{root}", "train")


def test_folder_truncated_image_is_named_when_decoded(tmp_path):
    root = tmp_path / "t"
    for c in ("a", "b"):
        for i in range(5):
            _png(root / "train" / c / f"{i}.png", _rgb(i + 7 * len(c)))
            _png(root / "test" / c / f"{i}.png", _rgb(i + 50))
    bad = root / "test" / "b" / "2.png"
    bad.write_bytes(bad.read_bytes()[:70])
    ds = data.get_dataset(f"folder:{root}", "test")  # the scan reads headers only
    with pytest.raises(DataError, match=r"cannot decode image .*2\.png"):
        [ds[i] for i in range(len(ds))]
    with pytest.raises(DataError, match=r"2\.png"):
        ds.tensors()


def test_folder_without_pillow_names_the_extra(tmp_path, monkeypatch):
    _png(tmp_path / "imgs" / "a" / "0.png", _rgb(0))
    for name in ("PIL", "PIL.Image"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r'folder: dataset needs Pillow, .*"gsa-nets\[train\]"'):
        data.get_dataset(f"folder:{tmp_path / 'imgs'}", "train")
