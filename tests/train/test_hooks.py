"""The hooks: named hooks (``load_hooks``: entry points of the gsa.hooks group and gsa's own modules
only) and the default factories (dataset descriptions and models that fit them)."""

import sys

import numpy as np
import pytest

from gsa.errors import ConfigError
from gsa.train.hooks import DataSpec, Hooks, default_info, default_model, input_stats, load_hooks
from gsa.train.testing import TOY_SPEC, toy_config


def test_entry_point_hooks_are_loaded_by_name(hooks_plugin):
    hooks_plugin(toyplugin="gsa.train.testing:toy_hooks")
    hooks = load_hooks("toyplugin")
    assert isinstance(hooks, Hooks) and hooks.info_fn("anything") == TOY_SPEC


def test_gsa_modules_are_allowed():
    assert load_hooks("gsa.train.testing:toy_hooks").info_fn("x") == TOY_SPEC


def test_any_other_module_is_refused_without_importing_it(tmp_path, monkeypatch, hooks_plugin):
    hooks_plugin(toyplugin="gsa.train.testing:toy_hooks")
    (tmp_path / "planted_hooks_mod.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_hooks("planted_hooks_mod:hooks", source="GSA_HOOKS")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("GSA_HOOKS 'planted_hooks_mod:hooks': no such hooks")
    assert '[project.entry-points."gsa.hooks"]' in msg and "installed: toyplugin" in msg
    assert "planted_hooks_mod" not in sys.modules


@pytest.mark.parametrize(
    "name,message",
    [
        ("gsa.train.testing:no_such_hooks", "cannot load the hooks"),
        ("gsa.no_such_module", "cannot load the hooks"),
        ("gsa.train.testing:TOY_SIZES", "did not give a gsa.train.Hooks"),
        ("broken", "cannot load the hooks"),
    ],
)
def test_hooks_that_cannot_be_loaded_give_one_line(hooks_plugin, name, message):
    hooks_plugin(broken="no_such_plugin_module:hooks")
    with pytest.raises(ConfigError, match=message) as e:
        load_hooks(name, source="--hooks")
    assert "\n" not in str(e.value) and str(e.value).startswith(f"--hooks {name!r}")


@pytest.mark.parametrize(
    "field, value",
    [("num_classes", 1), ("num_classes", 0), ("in_channels", 0), ("num_classes", 2.0), ("in_channels", True)],
)
def test_data_spec_refuses_impossible_sizes(field, value):
    kw = dict(name="d", in_channels=1, num_classes=3, image_size=(8, 8))
    kw[field] = value
    with pytest.raises(ConfigError, match=f"dataset 'd': {field} must be an integer >= "):
        DataSpec(**kw)


def test_default_model_refuses_images_smaller_than_its_crops_and_pools(tmp_path):
    path = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (30, 20, 20), dtype=np.uint8), labels=np.arange(30) % 3)
    spec = default_info(f"npz:{path}")
    assert (spec.num_classes, spec.image_size) == (3, (20, 20))
    crops = {"input_pool": 1, "crop": [2, 0, 2, 1, 1]}  # the rotmnist preset's (the mini recipe has none)
    cfg = toy_config("x", dataset=f"npz:{path}", preset="rotmnist", patch_size=3, model_args=crops)
    with pytest.raises(ConfigError, match=r"at least 22x22 pixels .*; dataset 'npz:.*small.npz' has 20x20 images"):
        default_model(cfg, spec)
    model = default_model(cfg, DataSpec(name="big", in_channels=1, num_classes=3, image_size=(22, 22)))
    assert model.min_input_size() == 22


def test_input_stats_are_the_datasets_or_the_original_codes_or_none():
    spec = default_info("rotmnist-mini")
    assert input_stats(toy_config("x"), spec) == (spec.mean, spec.std) == ((0.1321,), (0.292,))
    assert input_stats(toy_config("x", input_stats="original"), spec) == ((0.1307,), (0.3081,))  # MNIST's
    assert input_stats(toy_config("x", input_stats="original", normalize=False), spec) == (None, None)
    assert default_info("rotmnist").original_stats == ((0.1307,), (0.3081,))
    assert default_info("cifar10").original_stats == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert default_info("pcam").original_stats == ((0.701, 0.538, 0.692), (0.235, 0.277, 0.213))
    with pytest.raises(
        ConfigError, match=r"^--input-stats original: the original code had no statistics for dataset 'd'"
    ):
        input_stats(toy_config("x", input_stats="original"), DataSpec("d", 1, 3, (8, 8), (0.5,), (0.2,)))


def test_the_positional_encoding_is_a_model_arg():
    """``--model-arg positional=NAME``; an unknown name is one line listing the encodings."""
    spec = DataSpec(name="d", in_channels=1, num_classes=3, image_size=(22, 22))
    tiny = {"channels": 6, "num_heads": 1, "lifting_heads": 1}

    def cfg(name):
        return toy_config("x", preset="rotmnist", patch_size=3, model_args={**tiny, "positional": name})

    assert default_model(cfg("joint"), spec).lifting.positional_name == "joint"
    with pytest.raises(ConfigError) as info:
        default_model(cfg("nope"), spec)
    text = str(info.value)
    assert "unknown positional encoding 'nope'; expected one of: rowcol, joint, fourier" in text and "\n" not in text
