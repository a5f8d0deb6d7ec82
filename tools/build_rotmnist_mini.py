#!/usr/bin/env python
"""Build the embedded ``rotmnist-mini`` dataset (a small stand-in for rotated MNIST).

All 10,000 genuine MNIST **test** digits, each rotated about the image centre by an
angle drawn uniformly from [0, 2*pi) with a fixed seed (the recipe of
``mnist_rotation_new``), bilinear interpolation, zero background, rounded and clipped
to uint8 (255 stays 255; no wrap-around). Split 7,000 / 1,000 / 2,000 at random
(seeded), each digit in exactly one split.

Writes, next to the package code (run from anywhere):
    src/gsa/data/assets/rotmnist_mini.npz     (deterministic bytes)
    src/gsa/data/assets/ROTMNIST_MINI.md      (provenance)
    src/gsa/data/_rotmnist_mini_meta.py       (sha256 and statistics the package checks)

Usage:
    python tools/build_rotmnist_mini.py [--source ../shared/data/mnist_test.npz] [--out-dir DIR]

The source ``mnist_test.npz`` (keys ``images`` uint8 [10000, 28, 28], ``labels``) is checked
by rebuilding the original idx files in memory and comparing with the published md5
values of ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (from checksums.json).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from gsa.groups import rotate_image  # noqa: E402

SEED = 0
SPLIT_SIZES = {"train": 7000, "valid": 1000, "test": 2000}
ASSETS = REPO / "src" / "gsa" / "data" / "assets"
META_PY = REPO / "src" / "gsa" / "data" / "_rotmnist_mini_meta.py"
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "mnist_test.npz"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def check_source(images: np.ndarray, labels: np.ndarray, checksums: dict) -> dict[str, str]:
    """Verify the arrays against the published md5 of the decompressed idx files."""
    if images.shape != (10000, 28, 28) or images.dtype != np.uint8:
        raise SystemExit(f"source images must be uint8 [10000, 28, 28], got {images.dtype} {images.shape}")
    if labels.shape != (10000,) or labels.min() < 0 or labels.max() > 9:
        raise SystemExit(f"source labels must be [10000] in 0..9, got {labels.shape}")
    files = checksums["mnist"]["files"]
    idx_images = struct.pack(">iiii", 2051, 10000, 28, 28) + images.tobytes()
    idx_labels = struct.pack(">ii", 2049, 10000) + labels.astype(np.uint8).tobytes()
    found = {
        "t10k-images-idx3-ubyte": hashlib.md5(idx_images).hexdigest(),
        "t10k-labels-idx1-ubyte": hashlib.md5(idx_labels).hexdigest(),
    }
    for name, md5 in found.items():
        expected = files[name + ".gz"]["raw_md5"]
        if md5 != expected:
            raise SystemExit(f"source does not match MNIST {name}: md5 {md5}, published {expected}")
    return found


def rotate_digits(images: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) rotated by ``angles`` (radians, CCW as displayed) -> uint8, in float64."""
    x = torch.from_numpy(images.astype(np.float64) / 255.0).unsqueeze(1)
    out = rotate_image(x, torch.rad2deg(torch.from_numpy(angles)), mode="bilinear").squeeze(1).numpy()
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def build_arrays(images: np.ndarray, labels: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """The dataset's arrays: ``{split}_x`` uint8 (N, 28, 28), ``{split}_y`` int64,
    ``{split}_angle`` float64 radians, ``{split}_index`` int64 (row in the MNIST test set)."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0.0, 2.0 * math.pi, size=len(images))  # one angle per source digit
    perm = rng.permutation(len(images))
    rotated = rotate_digits(images, angles)
    arrays: dict[str, np.ndarray] = {}
    start = 0
    for split, size in SPLIT_SIZES.items():
        idx = np.sort(perm[start : start + size])
        start += size
        arrays[f"{split}_x"] = rotated[idx]
        arrays[f"{split}_y"] = labels[idx].astype(np.int64)
        arrays[f"{split}_angle"] = angles[idx].astype(np.float64)
        arrays[f"{split}_index"] = idx.astype(np.int64)
    assert start == len(images)
    return arrays


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed .npz readable by ``np.load`` with fixed timestamps and member order,
    so the same arrays always give the same bytes (``np.savez`` stamps the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=6)
    return buf.getvalue()


def stats(arrays: dict[str, np.ndarray]) -> tuple[float, float]:
    x = arrays["train_x"].astype(np.float64) / 255.0
    return round(float(x.mean()), 4), round(float(x.std()), 4)


def provenance_md(sha256: str, src_sha256: str, idx_md5: dict[str, str], arrays, mean, std, nbytes: int) -> str:
    counts = {s: np.bincount(arrays[f"{s}_y"], minlength=10).tolist() for s in SPLIT_SIZES}
    return f"""# rotmnist-mini: provenance

**This is a small stand-in, NOT the rotated-MNIST benchmark.** It lets `gsa` train, test and
demo out of the box without a download. Accuracies on it are not comparable with published
rotated-MNIST (`mnist_rotation_new`, 12,000 train / 50,000 test) numbers; use the `rotmnist`
dataset (`--data-dir`, `--download`) for those.

## What it is

All 10,000 digits of the genuine MNIST **test** set, each rotated by its own angle drawn uniformly
from [0, 2π), the recipe used for `mnist_rotation_new` (Larochelle et al., 2007; their
interpolation may differ from the bilinear one used here). The digits, and the split sizes, are
not those of `mnist_rotation_new`.

| split | images | label counts 0..9 |
| --- | --- | --- |
| train | {SPLIT_SIZES["train"]:,} | {counts["train"]} |
| valid | {SPLIT_SIZES["valid"]:,} | {counts["valid"]} |
| test | {SPLIT_SIZES["test"]:,} | {counts["test"]} |

Each source digit is in exactly one split (random, seeded; not stratified).

File `rotmnist_mini.npz` ({nbytes:,} bytes), sha256 `{sha256}`. Keys, for each split `S`:

| key | dtype, shape | meaning |
| --- | --- | --- |
| `S_x` | uint8 [N, 28, 28] | rotated digit, 0..255, row 0 at the top |
| `S_y` | int64 [N] | label 0..9 |
| `S_angle` | float64 [N] | rotation in radians, counter-clockwise as displayed (row 0 at top) |
| `S_index` | int64 [N] | row of the source digit in the MNIST test set |

Training-split pixel mean {mean}, std {std} (pixels scaled to [0, 1]).

## How it was built

`python tools/build_rotmnist_mini.py` (deterministic: a re-run gives the same bytes):

1. Read `mnist_test.npz` (uint8 [10000, 28, 28] and labels; sha256 `{src_sha256}`), made from the
   original `t10k-images-idx3-ubyte.gz` (md5 `9fb629c4189551a2d022fa330f9573f3`) and
   `t10k-labels-idx1-ubyte.gz` (md5 `ec29112dd5afa0611ce80d1b7f02629c`). The script rebuilds the
   decompressed idx files from the arrays and checks them against the published md5 values:
   images `{idx_md5["t10k-images-idx3-ubyte"]}`, labels `{idx_md5["t10k-labels-idx1-ubyte"]}`.
2. `rng = numpy.random.default_rng({SEED})`; angles `rng.uniform(0, 2π, 10000)` (one per source
   digit, in source order), then `rng.permutation(10000)` assigns the first 7,000 to train, the next
   1,000 to valid and the last 2,000 to test (each split kept in source order).
3. Each digit is scaled to [0, 1] in float64 and rotated about the image centre with
   `gsa.data.transforms.rotate` (torch `grid_sample`, bilinear, `align_corners=False`, zero
   background), then `clip(rint(x * 255), 0, 255)` to uint8. A full-intensity pixel stays 255
   (the original GSA-Nets loader's `(x * 256).round()` wrapped 1.0 to 0).
4. Stored as a compressed `.npz` with fixed zip timestamps.

## License and citation

MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges, "The MNIST database of
handwritten digits", licensed under CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/).
This derived file is distributed under the same license, CC BY-SA 3.0. Changes made: each digit
was rotated (bilinear interpolation) and requantised to uint8, and the set was split three ways.

Rotation recipe: H. Larochelle, D. Erhan, A. Courville, J. Bergstra, Y. Bengio, "An empirical
evaluation of deep architectures on problems with many factors of variation", ICML 2007.
"""


def meta_py(sha256: str, mean: float, std: float, nbytes: int) -> str:
    return f'''"""Generated by tools/build_rotmnist_mini.py; do not edit by hand."""

ROTMNIST_MINI_SHA256 = "{sha256}"
ROTMNIST_MINI_BYTES = {nbytes}
ROTMNIST_MINI_SEED = {SEED}
ROTMNIST_MINI_SPLIT_SIZES = {SPLIT_SIZES!r}
ROTMNIST_MINI_MEAN = ({mean},)
ROTMNIST_MINI_STD = ({std},)
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="mnist_test.npz (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=ASSETS, help="where to write the .npz and .md")
    parser.add_argument("--meta", type=Path, default=META_PY, help="generated Python module with the sha256")
    args = parser.parse_args(argv)

    raw = args.source.read_bytes()
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        images, labels = z["images"], z["labels"].astype(np.int64)
    checksums = json.loads((ASSETS / "checksums.json").read_text("utf-8"))
    idx_md5 = check_source(images, labels, checksums)

    arrays = build_arrays(images, labels)
    data = npz_bytes(arrays)
    sha256 = hashlib.sha256(data).hexdigest()
    mean, std = stats(arrays)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "rotmnist_mini.npz").write_bytes(data)
    md = provenance_md(sha256, hashlib.sha256(raw).hexdigest(), idx_md5, arrays, mean, std, len(data))
    (args.out_dir / "ROTMNIST_MINI.md").write_text(md, "utf-8")
    args.meta.write_text(meta_py(sha256, mean, std, len(data)), "utf-8")
    print(f"wrote {args.out_dir / 'rotmnist_mini.npz'} ({len(data):,} bytes) sha256 {sha256}")
    print(f"train mean {mean} std {std}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
