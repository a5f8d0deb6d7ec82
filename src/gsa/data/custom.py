"""User datasets: ``folder:PATH`` (image files in class folders) and ``npz:PATH`` (arrays).

``folder:PATH``
    * If ``PATH/train/`` exists: ``PATH/<split>/<class>/<image>`` with splits ``train``,
      ``valid`` (or ``val``) and ``test``. ``test/`` is required; if there is no
      ``valid/``, a seeded 10 % of ``train/`` is held out as ``valid``.
    * Otherwise ``PATH/<class>/<image>``, split 80/10/10 at random with a fixed seed (0).
    Classes are the sorted folder names (labels 0, 1, ... in that order). Image files:
    ``.png .jpg .jpeg .bmp .gif .tif .tiff .webp .ppm .pgm`` (case-insensitive; hidden
    files skipped). All images must have the same size and mode (L, RGB or RGBA; 1 is read
    as L, P as RGB); otherwise a :class:`DataError` names the odd file. Images are decoded
    lazily, per item.

``npz:PATH``
    * keys ``x_train, y_train, x_valid, y_valid, x_test, y_test``, or
    * keys ``images, labels``, split 80/10/10 at random with a fixed seed (0).
    Optional ``class_names`` (string array). Layout rule for ``x``: ``(N, H, W)`` is one
    channel; for 4-D arrays, the last axis is channels if its size is <= 4 (``(N, H, W, C)``),
    else axis 1 must be (``(N, C, H, W)``). ``uint8`` images are scaled by 1/255; float
    images must already lie in [0, 1]. Labels: non-negative integers. Loaded with
    ``allow_pickle=False``.

Both forms are checked before anything trains (:func:`~gsa.data.base.check_labels`): every
split holds images, the classes are ``0 .. K-1`` with an image for each (a stray label of
999999 is an error naming the gap, not a 1,000,000-class model), and the train split has
at least two classes. A file that cannot be read (empty, truncated, a ``.npy`` renamed
``.npz``, an image over PIL's decompression-bomb limit) is a :class:`DataError` naming it.

Statistics in :func:`folder_info`/:func:`npz_info` (mean/std) are computed from the
training split (for folders: from at most 1,000 training images, chosen with a fixed seed);
training images that are all one value (std 0 in every channel) are refused.
"""

from __future__ import annotations

import functools
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..extras import require
from .base import ArrayDataset, DatasetInfo, channel_stats, check_labels, check_stats, seeded_split

__all__ = ["IMAGE_EXTENSIONS", "FolderDataset", "load_folder", "folder_info", "load_npz", "npz_info"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_MODE_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
_MODE_CONVERT = {"1": "L", "P": "RGB"}
SEED = 0
_STATS_MAX = 1000

# --------------------------------------------------------------------------- folder


def _images_in(class_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in class_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@functools.lru_cache(maxsize=8)
def _scan_folder(root_str: str, mtime_ns: int) -> dict:
    """Index a folder dataset: class names, per-split (paths, labels), mode and size."""
    root = Path(root_str)
    tag = f"folder:{root}"
    if not root.is_dir():
        raise DataError(f"{tag}: not a directory; give folder:PATH with PATH/<class>/*.png or PATH/train/<class>/...")
    has_splits = (root / "train").is_dir()
    if has_splits:
        classes = [p.name for p in _class_dirs(root / "train")]
        split_dirs = {"train": root / "train", "test": root / "test"}
        for valid_name in ("valid", "val"):
            if (root / valid_name).is_dir():
                split_dirs["valid"] = root / valid_name
                break
        if not split_dirs["test"].is_dir():
            raise DataError(f"{tag}: has train/ but no test/; add PATH/test/<class>/... (and optionally valid/)")
    else:
        classes = [p.name for p in _class_dirs(root)]
        split_dirs = {"all": root}
    if not classes:
        raise DataError(f"{tag}: no class folders found; expected PATH/<class>/<images> or PATH/train/<class>/...")
    index = {c: i for i, c in enumerate(classes)}

    files: dict[str, tuple[list[Path], list[int]]] = {}
    for split, sdir in split_dirs.items():
        paths: list[Path] = []
        labels: list[int] = []
        for cdir in _class_dirs(sdir):
            if cdir.name not in index:
                raise DataError(
                    f"{tag}: {cdir} is a class that train/ does not have; classes must be the same in every split"
                )
            found = _images_in(cdir)
            paths += found
            labels += [index[cdir.name]] * len(found)
        files[split] = (paths, labels)

    all_paths = [p for paths, _ in files.values() for p in paths]
    if not all_paths:
        raise DataError(f"{tag}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    ref = None
    for p in all_paths:
        with _open_image(p, tag) as im:
            mode, size = _MODE_CONVERT.get(im.mode, im.mode), im.size
        if mode not in _MODE_CHANNELS:
            raise DataError(f"{tag}: image {p} has unsupported mode {mode}; convert images to L (gray), RGB or RGBA")
        if ref is None:
            ref = (p, mode, size)
        elif (mode, size) != ref[1:]:
            raise DataError(
                f"{tag}: image {p} is {size[0]}x{size[1]} mode {mode}, but {ref[0]} is "
                f"{ref[2][0]}x{ref[2][1]} mode {ref[1]}; all images must have the same size and mode "
                "(resize/convert them first)"
            )
    assert ref is not None

    if not has_splits:
        paths, labels = files.pop("all")
        parts = seeded_split(len(paths), SEED, what=tag)
        for split, idx in parts.items():
            files[split] = ([paths[i] for i in idx], [labels[i] for i in idx])
    elif "valid" not in files:
        paths, labels = files["train"]
        perm = np.random.default_rng(SEED).permutation(len(paths))
        n_valid = max(1, int(np.floor(len(paths) / 10 + 0.5)))
        if len(paths) < 2:
            raise DataError(f"{tag}: train/ needs at least 2 images to hold out a valid split")
        keep, hold = np.sort(perm[n_valid:]), np.sort(perm[:n_valid])
        files["valid"] = ([paths[i] for i in hold], [labels[i] for i in hold])
        files["train"] = ([paths[i] for i in keep], [labels[i] for i in keep])
    check_labels(
        tag, {s: np.asarray(files[s][1], dtype=np.int64) for s in ("train", "valid", "test")}, len(classes), classes
    )
    return {"classes": tuple(classes), "files": files, "mode": ref[1], "size": ref[2]}


def _folder_index(path: str | Path) -> dict:
    root = Path(path).expanduser().resolve()
    mtime = root.stat().st_mtime_ns if root.exists() else 0
    return _scan_folder(str(root), mtime)


def _open_image(path: Path, tag: str | None = None):
    """``PIL.Image.open(path)``; a :class:`DataError` naming the file when it is unreadable or larger than
    PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, also where PIL would only warn)."""
    Image = require("PIL.Image", "a folder: dataset")

    where = f"{tag}: " if tag else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{where}image {path} is too large ({exc}); the limit is PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels: downscale the image (or raise the limit if you trust the file)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{where}cannot read image {path} ({exc}); remove or fix it") from None


def _decode(path: Path, mode: str) -> torch.Tensor:
    with _open_image(path) as im:
        try:
            if im.mode != mode:
                im = im.convert(mode)
            arr = np.asarray(im, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError, zlib.error) as exc:  # e.g. "image file is truncated"
            raise DataError(
                f"cannot decode image {path} ({exc}); the file is truncated or corrupt: remove or replace it"
            ) from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (C, H, W) uint8


class FolderDataset(Dataset):
    """Images decoded from files on access: items are (float32 ``(C, H, W)`` in [0, 1], int).

    Attributes: ``paths`` (list of files), ``labels`` (int64 tensor), ``info``, ``split``.
    """

    def __init__(self, paths, labels, mode: str, *, info: DatasetInfo | None = None, split=None, transform=None):
        self.paths = list(paths)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.mode, self.info, self.split, self.transform = mode, info, split, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = _decode(self.paths[index], self.mode).to(torch.float32).div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode every image: float32 ``(N, C, H, W)`` in [0, 1] and labels int64 ``(N,)``."""
        if not self.paths:
            raise DataError("empty split")
        x = torch.stack([_decode(p, self.mode) for p in self.paths]).to(torch.float32).div_(255.0)
        return x, self.labels.clone()

    def __repr__(self) -> str:
        return f"FolderDataset(split={self.split!r}, n={len(self)}, mode={self.mode})"


def folder_info(path: str | Path) -> DatasetInfo:
    """:class:`DatasetInfo` of ``folder:PATH`` (scans the folder; stats from <= 1,000 train images)."""
    root = Path(path).expanduser().resolve()
    return _folder_info(str(path), str(root), root.stat().st_mtime_ns if root.exists() else 0)


@functools.lru_cache(maxsize=8)
def _folder_info(path: str, root: str, mtime_ns: int) -> DatasetInfo:
    idx = _scan_folder(root, mtime_ns)
    paths, _ = idx["files"]["train"]
    rng = np.random.default_rng(SEED)
    pick = sorted(rng.choice(len(paths), size=min(len(paths), _STATS_MAX), replace=False))
    sample = torch.stack([_decode(paths[i], idx["mode"]) for i in pick])
    mean, std = channel_stats(sample)
    check_stats(f"folder:{path}", std)
    w, h = idx["size"]
    classes = idx["classes"]
    counts = {s: len(idx["files"][s][0]) for s in ("train", "valid", "test")}
    return DatasetInfo(
        name=f"folder:{path}",
        in_channels=_MODE_CHANNELS[idx["mode"]],
        num_classes=len(classes),
        image_size=(h, w),
        mean=mean,
        std=std,
        class_names=classes,
        description=f"Image folder {Path(path).name}: {counts['train']} train / {counts['valid']} valid / "
        f"{counts['test']} test, {len(classes)} classes, {w}x{h} {idx['mode']}",
    )


def load_folder(path: str | Path, split: str, *, transform=None) -> FolderDataset:
    """``split`` of ``folder:PATH`` as a lazily-decoding :class:`FolderDataset`."""
    idx = _folder_index(path)
    paths, labels = idx["files"][split]
    return FolderDataset(paths, labels, idx["mode"], info=folder_info(path), split=split, transform=transform)


# --------------------------------------------------------------------------- npz


def _to_nchw(x: np.ndarray, tag: str, key: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[-1] <= 4:
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if x.shape[1] <= 4:
            return x
    raise DataError(f"{tag}: {key} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C <= 4")


def _images(x: np.ndarray, tag: str, key: str) -> np.ndarray:
    """Validate/convert to (N, C, H, W) uint8 (kept as bytes) or float32 in [0, 1]."""
    x = _to_nchw(x, tag, key)
    if 0 in x.shape[1:]:
        raise DataError(
            f"{tag}: {key} holds images of shape {x.shape[1:]} (C, H, W); images need a channel and a pixel"
        )
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not np.isfinite(x).all():
            raise DataError(f"{tag}: {key} contains NaN or infinite values")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{tag}: float images in {key} must lie in [0, 1], found [{lo:g}, {hi:g}]; "
                "scale them to [0, 1] or store uint8 0..255"
            )
        return x.astype(np.float32)
    raise DataError(f"{tag}: {key} has dtype {x.dtype}; images must be uint8 (0..255) or float in [0, 1]")


def _labels(y: np.ndarray, n: int, tag: str, key: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim > 1 and y.size == n:  # e.g. (N, 1)
        y = y.reshape(-1)
    if y.shape != (n,):
        raise DataError(f"{tag}: {key} has shape {y.shape}, expected ({n},) to match the images")
    integral_float = np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and np.all(np.mod(y, 1) == 0)
    if not (np.issubdtype(y.dtype, np.integer) or integral_float):
        raise DataError(f"{tag}: {key} must hold integer class labels, found dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{tag}: {key} has negative labels; labels must be 0 .. num_classes - 1")
    return y


_NPZ_KEYS = ("x_train", "y_train", "x_valid", "y_valid", "x_test", "y_test", "images", "labels", "class_names")
_NPZ_HINT = "give an .npz archive made with numpy.savez or numpy.savez_compressed"
_NPZ_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _npz_members(path: Path, tag: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of the archive that gsa reads, and the names of all; a one-line :class:`DataError` for
    a file that is not a readable ``.npz`` (empty, truncated, corrupt, a ``.npy`` renamed, pickled objects)."""
    try:
        z = np.load(path, allow_pickle=False)
    except _NPZ_READ_ERRORS as exc:
        raise DataError(f"{tag}: cannot read ({_why(exc)}); {_NPZ_HINT}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{tag}: holds one bare array (an .npy file), not an archive of named arrays; {_NPZ_HINT}")
    members: dict[str, np.ndarray] = {}
    with z:
        for key in (k for k in z.files if k in _NPZ_KEYS):
            try:
                members[key] = z[key]
            except _NPZ_READ_ERRORS as exc:
                raise DataError(
                    f"{tag}: cannot read array {key!r} ({_why(exc)}); is the file truncated or corrupt? {_NPZ_HINT}"
                ) from None
        return members, list(z.files)


def _why(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@functools.lru_cache(maxsize=4)
def _read_npz(path_str: str, mtime_ns: int, size: int) -> dict:
    path = Path(path_str)
    tag = f"npz:{path}"
    z, names_found = _npz_members(path, tag)
    keys = set(z)
    split_keys = {f"{a}_{s}" for a in ("x", "y") for s in ("train", "valid", "test")}
    out: dict[str, np.ndarray] = {}
    if split_keys <= keys:
        for s in ("train", "valid", "test"):
            x = _images(z[f"x_{s}"], tag, f"x_{s}")
            out[f"{s}_x"] = x
            out[f"{s}_y"] = _labels(z[f"y_{s}"], x.shape[0], tag, f"y_{s}")
    elif {"images", "labels"} <= keys:
        x = _images(z["images"], tag, "images")
        y = _labels(z["labels"], x.shape[0], tag, "labels")
        for s, idx in seeded_split(x.shape[0], SEED, what=tag).items():
            out[f"{s}_x"], out[f"{s}_y"] = x[idx], y[idx]
    else:
        raise DataError(
            f"{tag}: found keys {sorted(names_found)}; expected x_train, y_train, x_valid, y_valid, x_test, y_test "
            "or images, labels"
        )
    shapes = {out[f"{s}_x"].shape[1:] for s in ("train", "valid", "test")}
    if len(shapes) != 1:
        raise DataError(f"{tag}: splits have different image shapes {sorted(shapes)}")
    labels = {s: out[f"{s}_y"] for s in ("train", "valid", "test")}
    num_classes = int(max((y.max() for y in labels.values() if y.size), default=0)) + 1
    names = None
    if "class_names" in keys:
        names = tuple(str(n) for n in z["class_names"].reshape(-1))
        if len(names) < num_classes:
            raise DataError(f"{tag}: class_names has {len(names)} entries but labels go up to {num_classes - 1}")
        num_classes = len(names)
    check_labels(tag, labels, num_classes, names)
    out["class_names"] = names or tuple(str(i) for i in range(num_classes))
    out["mean"], out["std"] = channel_stats(out["train_x"])
    check_stats(tag, out["std"])
    return out


def _npz_arrays(path: str | Path) -> dict:
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise DataError(f"npz:{path}: file not found; give npz:PATH to an existing .npz file")
    st = p.stat()
    return _read_npz(str(p), st.st_mtime_ns, st.st_size)


def npz_info(path: str | Path) -> DatasetInfo:
    """:class:`DatasetInfo` of ``npz:PATH`` (mean/std over the training split)."""
    a = _npz_arrays(path)
    c, h, w = a["train_x"].shape[1:]
    mean, std = a["mean"], a["std"]
    n = {s: a[f"{s}_x"].shape[0] for s in ("train", "valid", "test")}
    return DatasetInfo(
        name=f"npz:{path}",
        in_channels=int(c),
        num_classes=len(a["class_names"]),
        image_size=(int(h), int(w)),
        mean=mean,
        std=std,
        class_names=a["class_names"],
        description=f"Arrays from {Path(path).name}: {n['train']} train / {n['valid']} valid / {n['test']} test",
    )


def load_npz(path: str | Path, split: str, *, transform=None) -> ArrayDataset:
    """``split`` of ``npz:PATH`` as an :class:`ArrayDataset`."""
    a = _npz_arrays(path)
    return ArrayDataset(a[f"{split}_x"], a[f"{split}_y"], info=npz_info(path), split=split, transform=transform)
