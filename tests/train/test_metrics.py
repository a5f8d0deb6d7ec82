"""Per-epoch logs: metrics.csv survives a full disk without a half-written row."""

import errno
import os

import pytest

from gsa.train.metrics import CSV_COLUMNS, CsvLog, read_csv


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
