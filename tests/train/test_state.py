"""The training position saved in last.state.pt."""

import dataclasses
import json

import gsa
from gsa.train.identity import settings_record
from gsa.train.state import Position, weights_metadata
from gsa.train.testing import TOY_SPEC, ToyNet, toy_config


def test_position_round_trips_through_its_saved_dict():
    pos = Position(epoch=1, batch=3, step=9, best_acc=0.5, epoch_seconds=[1.5], meter={"count": 48.0})
    saved = dataclasses.asdict(pos)
    assert list(saved) == [
        "epoch",
        "batch",
        "step",
        "best_acc",
        "best_epoch",
        "best_step",
        "skipped_steps",
        "train_seconds",
        "train_images",
        "epoch_seconds",
        "meter",
        "epoch_elapsed",
    ]  # the checkpoint format
    assert Position.from_dict(saved) == pos


def test_position_from_dict_ignores_unknown_keys_and_defaults_missing_ones():
    pos = Position.from_dict({"epoch": 2, "step": 12, "written_by": "a newer gsa"})
    assert pos == Position(epoch=2, step=12)


def test_weights_metadata():
    cfg = toy_config("x")
    meta = weights_metadata(cfg, Position(epoch=1, step=7), valid_acc="0.500000")
    assert meta == {
        "step": 7,
        "epoch": 1,
        "preset": cfg.preset,
        "group": cfg.group,
        "patch_size": cfg.patch_size,
        "dataset": "toy",
        "model_settings": json.dumps(settings_record(cfg), sort_keys=True),
        "valid_acc": "0.500000",
    }


def test_weights_metadata_records_the_network_of_a_gsanet():
    cfg = toy_config(
        "x", group="p8", patch_size=None, model_args={"channels": 6, "num_heads": 1, "block_sizes": (1,), "crop": 0}
    )
    net = gsa.models.create(cfg.preset, group=cfg.group, patch_size=cfg.patch_size, **cfg.model_args)
    record = json.loads(weights_metadata(cfg, Position(), net)["network"])
    assert (record["group"], record["patch_size"], record["channels"], record["block_sizes"]) == ("p8", None, 6, [1])


def test_weights_metadata_records_a_gsanets_config_and_the_input_normalisation_it_was_trained_with():
    net = gsa.models.create("rotmnist", channels=6, num_heads=1, block_sizes=(1,), crop=0)
    for normalize, mean, std in ((True, [0.25], [0.3]), (False, None, None)):
        meta = weights_metadata(toy_config("x", normalize=normalize), Position(), net, TOY_SPEC)
        assert json.loads(meta["model_config"]) == json.loads(json.dumps(net.config.to_dict()))
        assert json.loads(meta["input"]) == {"mean": mean, "std": std, "input_size": [1, 12, 12], "dataset": "toy"}
    flat = dataclasses.replace(TOY_SPEC, in_channels=2, mean=(0.25, 1.0), std=(0.3, 0.0))  # a constant channel
    record = json.loads(weights_metadata(toy_config("x"), Position(), net, flat)["input"])
    assert record["std"] == [0.3, 1.0]  # divided by 1, as make_prepare does
    assert "input" not in weights_metadata(toy_config("x"), Position(), ToyNet(), TOY_SPEC)  # not a GSA-Net
    assert "input" not in weights_metadata(toy_config("x"), Position(), net)  # no dataset given


def test_weights_metadata_records_the_original_codes_statistics_when_the_run_used_them():
    net = gsa.models.create("rotmnist", channels=6, num_heads=1, block_sizes=(1,), crop=0)
    spec = dataclasses.replace(TOY_SPEC, original_stats=((0.1307,), (0.3081,)))
    meta = weights_metadata(toy_config("x", input_stats="original"), Position(), net, spec)
    assert (json.loads(meta["input"])["mean"], json.loads(meta["input"])["std"]) == ([0.1307], [0.3081])
