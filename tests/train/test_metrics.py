"""Per-epoch logs: metrics.csv survives a full disk without a half-written row."""

import errno
import os
import sys

import pytest

from gsa.errors import MissingDependencyError
from gsa.train.metrics import CSV_COLUMNS, CsvLog, TensorBoardLog, read_csv


def test_a_failed_append_leaves_the_previous_rows(tmp_path, monkeypatch):
    log = CsvLog(tmp_path)
    log.append({"epoch": 1, "step": 6, "train_loss": 1.0})
    before = log.path.read_bytes()
    assert before.startswith(",".join(CSV_COLUMNS).encode())

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device"):
        log.append({"epoch": 2, "step": 12, "train_loss": 0.5})
    assert log.path.read_bytes() == before  # the row that did not reach the disk is cut back off
    monkeypatch.undo()
    log.append({"epoch": 2, "step": 12, "train_loss": 0.5})
    assert [row["epoch"] for row in read_csv(log.path)] == ["1", "2"]


def test_tensorboard_missing_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    TensorBoardLog(tmp_path, enabled=False).scalars({"loss": 1.0}, 0)  # off: nothing needed
    with pytest.raises(MissingDependencyError, match=r'needs tensorboard, .*: pip install "gsa-nets\[train\]"'):
        TensorBoardLog(tmp_path)
