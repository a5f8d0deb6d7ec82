"""A trained GSA-Net back from its run or its weight file alone (gsa.models.load), and the hub
folder layout (save_pretrained / from_pretrained): same logits, bit for bit."""

import json
import shutil
import sys
import types

import pytest
import torch

import gsa
from gsa.errors import CheckpointError, ConfigError
from gsa.models import GSANet, GSANetConfig
from gsa.models.pretrained import CONFIG_NAME, WEIGHTS_NAME, from_pretrained, load, model_records
from gsa.train import checkpoint as ckpt
from gsa.train.build import build_model
from gsa.train.engine import train
from gsa.train.steps import make_prepare
from gsa.train.testing import TOY_SPEC, toy_config, toy_hooks, toy_split

TINY = GSANetConfig(in_channels=1, num_classes=3, channels=6, num_heads=2, block_sizes=(1,), patch_size=3)


def tiny_gsanet(cfg, spec):
    return GSANet(TINY)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny GSA-Net trained for a few steps on the toy rings (normalised with mean 0.25, std 0.3)."""
    out = tmp_path_factory.mktemp("pretrained") / "run"
    torch.set_num_threads(1)
    cfg = toy_config(out, epochs=1, max_steps=3, rotation_subset=4, invariance_subset=4)
    report = train(cfg, hooks=toy_hooks(tiny_gsanet))
    return out, cfg, report


def trained_logits(run_dir, cfg, images):
    """Logits of the run's best weights as the training engine computes them (its model, its normalisation)."""
    model = build_model(cfg, TOY_SPEC, toy_hooks(tiny_gsanet), torch.device("cpu"))
    ckpt.load_weights(run_dir / ckpt.BEST, model, cfg)
    prepare = make_prepare(TOY_SPEC.mean, TOY_SPEC.std, torch.device("cpu"))
    with torch.no_grad():
        return model.eval()(prepare(images))


def test_the_weight_file_alone_gives_the_trained_logits(run, tmp_path):
    run_dir, cfg, report = run
    alone = tmp_path / "elsewhere" / "weights.safetensors"
    alone.parent.mkdir()
    shutil.copy(run_dir / ckpt.BEST, alone)  # no config.json, no dataset, no hooks beside it
    net = load(alone)
    assert not net.training and net.config == TINY
    images, labels = toy_split("test").tensors
    with torch.no_grad():
        logits = net(net.preprocess(images))
    assert torch.equal(logits, trained_logits(run_dir, cfg, images))
    with torch.no_grad():
        assert not torch.allclose(net(images), logits, atol=1e-3)  # the recorded normalisation matters
    assert (logits.argmax(1) == labels).float().mean().item() == pytest.approx(report["test_accuracy"], abs=1e-9)
    assert net.pretrained_cfg["mean"] == (0.25,) and net.pretrained_cfg["std"] == (0.3,)
    assert net.pretrained_cfg["input_size"] == (1, 12, 12) and net.pretrained_cfg["dataset"] == "toy"


def test_a_run_directory_loads_its_best_or_last_weights(run):
    run_dir, _, _ = run
    for which in ("best", "last"):
        net = gsa.models.load(run_dir, which=which)
        tensors, _ = ckpt.read_weights(ckpt.resolve_weights(run_dir, which))
        assert all(torch.equal(v, tensors[k]) for k, v in net.state_dict().items())
    with pytest.raises(ConfigError, match="which must be 'best' or 'last'"):
        load(run_dir, which="worst")


def test_the_loaded_model_is_invariant_to_quarter_turns(run):
    net = load(run[0])
    images = toy_split("test").tensors[0][:8]
    with torch.no_grad():
        logits = net(net.preprocess(images))
        for k in (1, 2, 3):
            turned = net(net.preprocess(torch.rot90(images, k, dims=(-2, -1))))
            assert torch.allclose(turned, logits, atol=1e-5)


def test_save_pretrained_round_trips_bit_for_bit(run, tmp_path):
    net = load(run[0])
    folder = net.save_pretrained(tmp_path / "hub")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert json.loads((folder / CONFIG_NAME).read_text())["pretrained_cfg"]["mean"] == [0.25]
    images = toy_split("valid").tensors[0]
    with torch.no_grad():
        expected = net(net.preprocess(images))
    for back in (GSANet.from_pretrained(folder), load(folder), load(folder / WEIGHTS_NAME)):
        assert not back.training and back.config == net.config and back.pretrained_cfg == net.pretrained_cfg
        assert back.state_dict().keys() == net.state_dict().keys()
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in back.state_dict().items())
        with torch.no_grad():
            assert torch.equal(back(back.preprocess(images)), expected)


def test_a_fresh_network_round_trips_with_its_dropouts_and_no_normalisation(tmp_path):
    net = gsa.models.create(
        "cifar10", group="p4", channels=6, num_heads=2, block_sizes=(1, 1, 1)
    )  # dropout after pools
    back = GSANet.from_pretrained(net.save_pretrained(tmp_path))
    assert back.config == net.config and back.pretrained_cfg["mean"] is None
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(back.preprocess(x), x)
    with torch.no_grad():
        assert torch.equal(back(x), net.eval()(x))


@pytest.mark.parametrize("positional", ["gevit", "fourier"])
def test_the_positional_encoding_comes_back_with_the_weights(tmp_path, positional):
    """gevit has the default's tensors: only the record tells them apart."""
    torch.manual_seed(0)
    net = gsa.models.create("rotmnist", group="p4", channels=6, num_heads=1, positional=positional)
    net.head.weight.data.normal_()
    back = GSANet.from_pretrained(net.save_pretrained(tmp_path))
    assert back.config.positional == positional and back.lifting.positional_name == positional
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        assert torch.equal(back(x), net.eval()(x))


def test_a_hub_repository_id_needs_huggingface_hub(tmp_path, monkeypatch):
    folder = gsa.models.create("rotmnist", channels=6, num_heads=2).save_pretrained(tmp_path / "snapshot")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(CheckpointError, match="without huggingface_hub only local folders are supported"):
        from_pretrained("someone/gsa-rotmnist")
    fake = types.ModuleType("huggingface_hub")
    fake.snapshot_download = lambda repo_id, allow_patterns: str(folder) if repo_id == "someone/gsa-rotmnist" else None
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    assert from_pretrained("someone/gsa-rotmnist").config.channels == 6


def test_files_without_the_records_or_with_a_foreign_config_are_refused(tmp_path):
    net = GSANet(TINY)
    ckpt.save_weights(tmp_path / "bare.safetensors", net)
    with pytest.raises(CheckpointError, match="no record of the network and its input normalisation"):
        load(tmp_path / "bare.safetensors")
    meta = model_records(TINY, mean=None, std=None, input_size=None)
    meta["model_config"] = json.dumps({**TINY.to_dict(), "colour": "blue"})
    ckpt.save_weights(tmp_path / "newer.safetensors", net, meta)
    with pytest.raises(CheckpointError, match="cannot rebuild the recorded GSA-Net"):
        load(tmp_path / "newer.safetensors")
    meta = model_records(GSANetConfig(**{**TINY.to_dict(), "channels": 8}), mean=None, std=None, input_size=None)
    ckpt.save_weights(tmp_path / "other.safetensors", net, meta)
    with pytest.raises(CheckpointError, match="weights do not match the recorded network"):
        load(tmp_path / "other.safetensors")
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / CONFIG_NAME).write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not a gsa model config"):
        from_pretrained(tmp_path / "hub")
