"""Weight files record which network they belong to; loading them into another one is refused."""

import json

import pytest
import torch

import gsa
from gsa.errors import CheckpointError
from gsa.train import checkpoint as ckpt
from gsa.train.identity import NETWORK_KEY, SETTINGS_KEY, identity_metadata, network_record, settings_record
from gsa.train.testing import ToyNet, toy_config

TINY = dict(channels=6, num_heads=1, lifting_heads=1, block_sizes=(1,), crop=0, num_classes=3)


def _net(group="p4", patch_size=3, **overrides):
    torch.manual_seed(0)
    return gsa.models.create("rotmnist", group=group, patch_size=patch_size, **{**TINY, **overrides})


def _cfg(group="p4", patch_size=3):
    return toy_config("run", group=group, patch_size=patch_size, model_args=TINY)


def _save(path, model, cfg):
    ckpt.save_weights(path, model, identity_metadata(model, cfg))
    return path


def _same_shapes(a, b):
    return {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


@pytest.mark.parametrize(
    "saved, loaded, message",
    [
        (dict(group="p8"), dict(group="p4m"), "group 'p8' in the file, 'p4m' in the model"),
        (dict(patch_size=3), dict(patch_size=None), "patch_size 3 in the file, None in the model"),
        (dict(readout="sum"), dict(readout="mean"), "readout 'sum' in the file, 'mean' in the model"),
        (dict(positional="gevit"), dict(positional="rowcol"), "positional 'gevit' in the file, 'rowcol' in the model"),
    ],
)
def test_weights_of_another_network_with_the_same_shapes_are_refused(tmp_path, saved, loaded, message):
    a, b = _net(**saved), _net(**loaded)
    assert _same_shapes(a, b)  # a strict state-dict load alone would accept them
    path = _save(tmp_path / "best.safetensors", a, _cfg())
    with pytest.raises(CheckpointError) as info:
        ckpt.load_weights(path, b)
    text = str(info.value)
    assert text.startswith(f"{path}: weights of another model (") and message in text and "\n" not in text


def test_the_same_network_loads_whatever_its_dropout_backend_or_spelling(tmp_path):
    a = _net(group="p4", attention_dropout=0.0)
    path = _save(tmp_path / "w.safetensors", a, _cfg())
    b = _net(group="R4", attention_dropout=0.3, value_dropout=0.3, backend="reference")
    ckpt.load_weights(path, b, _cfg(group="R4"))
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_records_are_json_metadata_entries():
    net, cfg = _net(), _cfg()
    meta = identity_metadata(net, cfg)
    assert json.loads(meta[NETWORK_KEY]) == network_record(net) and network_record(net)["group"] == "p4"
    assert "attention_dropout" not in network_record(net) and "channels" in network_record(net)
    assert json.loads(meta[SETTINGS_KEY]) == settings_record(cfg)
    assert settings_record(_cfg(group="R4"))["group"] == "p4"
    assert NETWORK_KEY not in identity_metadata(ToyNet(), cfg)  # only GSA-Nets have a network record


def test_other_modules_are_compared_on_the_run_settings(tmp_path):
    path = _save(tmp_path / "w.safetensors", ToyNet(), _cfg(group="p8"))
    with pytest.raises(CheckpointError, match=r"group 'p8' in the file, 'p4m' in the model"):
        ckpt.load_weights(path, ToyNet(), _cfg(group="p4m"))
    ckpt.load_weights(path, ToyNet(), _cfg(group="p8"))
    ckpt.load_weights(path, ToyNet())  # no config given: nothing to compare but the tensors


def test_files_without_records_load_and_old_entries_are_compared(tmp_path):
    net = _net(group="p8")
    bare = tmp_path / "bare.safetensors"
    ckpt.save_weights(bare, net)
    ckpt.load_weights(bare, _net(group="p4m"), _cfg(group="p4m"))  # nothing recorded: loads
    old = tmp_path / "old.safetensors"
    ckpt.save_weights(old, net, {"step": 3, "preset": "rotmnist", "group": "p8", "patch_size": 3})
    ckpt.load_weights(old, _net(group="p8"), _cfg(group="p8"))
    with pytest.raises(CheckpointError, match=r"group 'p8' in the file, 'p4m' in the model"):
        ckpt.load_weights(old, _net(group="p4m"), _cfg(group="p4m"))


def test_an_unreadable_record_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save_weights(path, _net(), {NETWORK_KEY: "{not json"})
    with pytest.raises(CheckpointError, match="unreadable 'network' record"):
        ckpt.load_weights(path, _net())


def test_records_from_before_positional_encodings_mean_the_row_column_mlps(tmp_path):
    net = _net()
    old_record = {k: v for k, v in network_record(net).items() if k != "positional"}
    path = tmp_path / "old.safetensors"
    ckpt.save_weights(path, net, {NETWORK_KEY: json.dumps(old_record)})
    ckpt.load_weights(path, _net(positional="Row-Col"))  # any spelling of the default
    with pytest.raises(CheckpointError, match=r"positional 'rowcol' in the file, 'gevit' in the model"):
        ckpt.load_weights(path, _net(positional="gevit"))  # same tensors, another encoding
