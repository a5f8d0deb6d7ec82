import dataclasses

import pytest

from gsa import data


def test_list_and_info_of_builtins_need_no_files():
    names = data.list_datasets()
    assert names == ["rotmnist-mini", "rotmnist", "cifar10", "pcam"]
    for name in names:
        info = data.info(name)
        assert info.name == name
        assert len(info.mean) == len(info.std) == info.in_channels
        assert len(info.class_names) == info.num_classes
        assert info.splits == ("train", "valid", "test")
        assert info.description and "\n" not in info.description
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.info("rotmnist").num_classes = 3


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        data.get_dataset("mnist", "train")
    msg = str(e.value)
    for n in ("rotmnist-mini", "rotmnist", "cifar10", "pcam", "folder:PATH", "npz:PATH"):
        assert n in msg
    with pytest.raises(ValueError, match="folder:PATH"):
        data.info("imagenet")
    with pytest.raises(ValueError, match="give a path"):
        data.get_dataset("npz:", "train")


def test_unknown_split_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        data.get_dataset("rotmnist-mini", "dev")
    assert "train, valid, test" in str(e.value)
    with pytest.raises(ValueError, match="valid"):
        data.arrays("cifar10", "holdout")


def test_aliases():
    assert len(data.get_dataset("ROTMNIST_MINI", "val")) == 1000
    assert data.info("cifar-10").name == "cifar10"
