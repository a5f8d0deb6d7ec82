"""Datasets for GSA-Nets: embedded ``rotmnist-mini``, real ``rotmnist``, ``cifar10``,
``pcam`` and user data (``folder:PATH``, ``npz:PATH``).

Every dataset yields ``(image, label)`` with ``image`` a float32 tensor ``(C, H, W)`` in
``[0, 1]`` and ``label`` an ``int``, and has ``train`` / ``valid`` / ``test`` splits
(model selection on ``valid``, never on ``test``).

>>> from gsa import data
>>> data.list_datasets()
['rotmnist-mini', 'rotmnist', 'cifar10', 'pcam']
>>> ds = data.get_dataset("rotmnist-mini", "train")
>>> x, y = ds[0]; x.shape
torch.Size([1, 28, 28])

The network is used only with ``download=True``; downloads and local files are checked
against published checksums, and problems raise :class:`DataError` with a one-line
message saying what to do.
"""

from ..errors import DataError
from .base import SPLITS, ArrayDataset, DatasetInfo, channel_stats, default_data_dir
from .checksums import verify_file
from .download import download_file
from .registry import CUSTOM_FORMS, arrays, get_dataset, in_memory, info, list_datasets

__all__ = [
    "SPLITS",
    "CUSTOM_FORMS",
    "DataError",
    "DatasetInfo",
    "ArrayDataset",
    "list_datasets",
    "info",
    "get_dataset",
    "arrays",
    "in_memory",
    "verify_file",
    "download_file",
    "channel_stats",
    "default_data_dir",
]
