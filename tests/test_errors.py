"""``gsa.errors``: one hierarchy, re-exported where users meet it, with the CLI's exit codes."""

import pytest
import torch

from gsa import errors


def test_every_error_is_a_gsa_error_with_an_exit_code():
    for name in set(errors.__all__) - {"one_line"}:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.GsaError)
        assert isinstance(cls.exit_code, int) and cls.exit_code > 0
    assert errors.ConfigError.exit_code == 2 and errors.NonFiniteLossError.exit_code == 3
    assert errors.TrainingInterrupted.exit_code == 130


def test_config_and_data_errors_are_value_errors():
    with pytest.raises(ValueError):
        raise errors.ConfigError("bad option")
    with pytest.raises(ValueError):
        raise errors.DataError("bad file")


def test_the_packages_re_export_the_same_classes():
    import gsa.data
    import gsa.train

    assert gsa.errors is errors
    assert gsa.data.DataError is errors.DataError
    for name in ("GsaError", "ConfigError", "CheckpointError", "NonFiniteLossError", "TrainingInterrupted"):
        assert getattr(gsa.train, name) is getattr(errors, name)


def test_a_bad_dataset_reaches_the_cli_as_one_line(tmp_path, capsys):
    import numpy as np

    from gsa.cli import main

    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 4, 4)), y=np.zeros(3))
    code = main(["info", "--dataset", f"npz:{bad}"])
    err = capsys.readouterr().err
    assert code in (errors.DataError.exit_code, errors.ConfigError.exit_code)
    assert err.startswith("gsa: error: ") and err.count("\n") == 1 and "expected x_train" in err


class _BrokenImages(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise errors.DataError(f"image {i} of digits.npz has shape (2, 2),\nexpected (1, 28, 28)")


def test_an_error_from_a_dataloader_worker_is_cut_to_its_message():
    loader = torch.utils.data.DataLoader(_BrokenImages(), num_workers=1)
    with pytest.raises(errors.DataError) as info:
        next(iter(loader))
    assert "Traceback" in str(info.value)  # PyTorch's re-raise: the worker's traceback in the message
    assert errors.one_line(info.value) == (
        "image 0 of digits.npz has shape (2, 2), expected (1, 28, 28) (in DataLoader worker process 0)"
    )


def test_one_line_joins_the_lines_of_any_other_message():
    assert errors.one_line(errors.ConfigError("bad value\n  for --lr")) == "bad value for --lr"
    assert errors.one_line(ValueError("Caught nothing: a message that only looks alike")) == (
        "Caught nothing: a message that only looks alike"
    )
