"""Fuzz of the user-data loaders with bad files, through the command line: every bad ``npz:`` file or
``folder:`` dataset ends ``gsa info`` with a non-zero exit code and one line on stderr, never a traceback."""

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from gsa.cli import main


def _good_arrays(n=30, size=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size), dtype=np.uint8), np.arange(n) % 3


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------- npz files


def _empty(p):
    p.write_bytes(b"")


def _truncated(p):
    x, y = _good_arrays()
    _npz(p, images=x, labels=y)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _npy_renamed(p):
    x, _ = _good_arrays()
    npy = p.with_suffix(".npy")
    np.save(npy, x)
    npy.rename(p)


def _text(p):
    p.write_text("images,labels\n1,2\n")


def _corrupt_member(p):
    x, y = _good_arrays()
    _npz(p, images=x, labels=y)
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 3  # inside the stored pixels of "images": the zip CRC no longer matches
    raw[mid : mid + 64] = bytes(b ^ 0xFF for b in raw[mid : mid + 64])
    p.write_bytes(bytes(raw))


def _pickled_objects(p):
    _npz(p, images=np.array([{"a": 1}] * 5, dtype=object), labels=np.zeros(5, int))


def _stray_label(p):
    x, y = _good_arrays(n=40)
    y = np.arange(40) % 10
    y[7] = 999999
    _npz(p, images=x, labels=y)


def _one_class(p):
    x, _ = _good_arrays()
    _npz(p, images=x, labels=np.zeros(len(x), int))


def _empty_test_split(p):
    x, y = _good_arrays()
    _npz(p, x_train=x[:20], y_train=y[:20], x_valid=x[20:], y_valid=y[20:], x_test=x[:0], y_test=y[:0])


def _constant_images(p):
    x, y = _good_arrays()
    _npz(p, images=np.zeros_like(x), labels=y)


def _zero_pixels(p):
    _npz(p, images=np.zeros((30, 0, 0), np.uint8), labels=np.arange(30) % 3)


def _too_small_for_the_model(p):
    x, y = _good_arrays(size=3)  # the mini recipe's 2x2 input pooling and max-pool need 4x4
    _npz(p, images=x, labels=y)


NPZ_CASES = {
    "empty": (_empty, "cannot read"),
    "truncated": (_truncated, "cannot read"),
    "npy-renamed": (_npy_renamed, "not an archive"),
    "text": (_text, "cannot read"),
    "corrupt-member": (_corrupt_member, "cannot read array 'images'"),
    "pickled-objects": (_pickled_objects, "cannot read array 'images'"),
    "stray-label": (_stray_label, "no image is labelled 10..999998"),
    "one-class": (_one_class, "at least 2 classes"),
    "empty-test-split": (_empty_test_split, "the test split has no images"),
    "constant-images": (_constant_images, "std 0 in every channel"),
    "zero-pixel-images": (_zero_pixels, "images need a channel and a pixel"),
    "too-small-for-the-model": (_too_small_for_the_model, "at least 4x4"),
}


def _one_line_error(args, capsys):
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0, err
    assert err.startswith("gsa: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_bad_npz_is_a_one_line_error(case, tmp_path, capsys):
    make, message = NPZ_CASES[case]
    path = tmp_path / f"{case}.npz"
    make(path)
    err = _one_line_error(["info", "--dataset", f"npz:{path}", "--no-flops"], capsys)
    assert message in err and str(path) in err


def test_empty_npz_in_a_real_process_has_no_traceback(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "gsa", "info", "--dataset", f"npz:{path}", "--no-flops"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GSA_DEBUG": ""},
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr


# --------------------------------------------------------------------------- folder datasets


def _png(path, seed, size=24):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _classes(root, names=("a", "b"), per_class=6):
    for c in names:
        for i in range(per_class):
            _png(root / c / f"{i}.png", 100 * ord(c[0]) + i)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width=20_000, height=20_000) -> bytes:
    """A 60-byte PNG whose header claims ``width x height`` gray pixels (400 M by default)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def _folder_truncated_png(root):
    _classes(root / "train")  # the statistics decode the training images (a test image fails when read)
    _classes(root / "valid", per_class=2)
    _classes(root / "test", per_class=2)
    bad = root / "train" / "b" / "3.png"
    bad.write_bytes(bad.read_bytes()[:60])
    return f"cannot decode image {bad}"


def _folder_bomb(root):
    _classes(root)
    (root / "a" / "huge.png").write_bytes(bomb_png())
    return "huge.png"


def _folder_garbage_png(root):
    _classes(root)
    (root / "a" / "notes.png").write_text("not an image")
    return "notes.png"


def _folder_one_class(root):
    _classes(root, names=("only",))
    return "at least 2 classes"


def _folder_empty_class(root):
    _classes(root, names=("a", "c"))
    (root / "b").mkdir()
    return "'b'"


FOLDER_CASES = {
    "truncated-png": _folder_truncated_png,
    "decompression-bomb": _folder_bomb,
    "garbage-png": _folder_garbage_png,
    "one-class": _folder_one_class,
    "empty-class-folder": _folder_empty_class,
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_bad_folder_is_a_one_line_error(case, tmp_path, capsys):
    root = tmp_path / case
    message = FOLDER_CASES[case](root)
    err = _one_line_error(["info", "--dataset", f"folder:{root}", "--no-flops"], capsys)
    assert message in err


def test_decompression_bomb_names_the_file_and_the_limit(tmp_path):
    from gsa import data
    from gsa.data import DataError

    _folder_bomb(tmp_path)
    with pytest.raises(DataError) as e:
        data.info(f"folder:{tmp_path}")
    assert "huge.png" in str(e.value) and f"{Image.MAX_IMAGE_PIXELS:,}" in str(e.value)
