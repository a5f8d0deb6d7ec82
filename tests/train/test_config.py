import pytest

from gsa.train.config import RECIPES, TrainConfig, config_diff, get_recipe, make_config
from gsa.errors import ConfigError


def test_paper_recipes_match_appendix_f():
    r = get_recipe("rotmnist")
    assert (r.optimizer, r.lr, r.weight_decay, r.batch_size, r.epochs, r.attention_dropout) == ("adam", 1e-3, 1e-4, 8, 300, 0.1)
    c = get_recipe("cifar10")
    assert (c.optimizer, c.momentum, c.scheduler, c.lr, c.batch_size, c.epochs, c.weight_decay) == (
        "sgd", 0.9, "cosine", 0.01, 24, 350, 1e-4)
    p = get_recipe("pcam")
    assert (p.optimizer, p.scheduler, p.lr, p.batch_size, p.epochs) == ("sgd", "cosine", 0.01, 8, 100)
    m = get_recipe("mini")
    assert (m.dataset, m.group, m.patch_size, m.optimizer, m.lr) == ("rotmnist-mini", "p4", 3, "adam", 5e-3)
    assert (m.batch_size, m.epochs, m.scheduler, m.warmup_epochs) == (8, 1, "cosine", 0.05)
    assert m.model_args == {"channels": 24, "num_heads": 2, "lifting_heads": 8, "readout": "sum"}


def test_model_args_merge_recipe_and_overrides():
    cfg = make_config("mini", model_args={"num_heads": 2, "whitening_scale": 1.0})
    assert cfg.model_args == {"channels": 24, "num_heads": 2, "lifting_heads": 8, "readout": "sum", "whitening_scale": 1.0}
    assert get_recipe("mini").model_args == {"channels": 24, "num_heads": 2, "lifting_heads": 8, "readout": "sum"}  # not mutated
    assert make_config("rotmnist").model_args == {}


def test_make_config_applies_recipe_then_overrides():
    cfg = make_config("cifar10", lr=0.1, epochs=3, attention_dropout=None)
    assert cfg.recipe == "cifar10" and cfg.optimizer == "sgd" and cfg.scheduler == "cosine"
    assert cfg.lr == 0.1 and cfg.epochs == 3 and cfg.batch_size == 24 and cfg.dataset == "cifar10"


def test_default_config_is_the_mini_recipe():
    cfg = make_config()
    assert cfg.recipe == "mini" and cfg.dataset == "rotmnist-mini" and cfg.preset == "rotmnist"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"optimizer": "lion"}, "unknown optimizer"),
        ({"scheduler": "step"}, "unknown scheduler"),
        ({"batch_size": 0}, "--batch-size must be a positive integer"),
        ({"patch_size": 4}, "--patch-size must be odd"),
        ({"lr": -1.0}, "--lr must be > 0"),
        ({"attention_dropout": 1.5}, "--attention-dropout must be in"),
        ({"bogus": 1}, "unknown config field"),
        ({"group": "p0"}, r"^unknown group 'p0'; expected one of: z2, .*p\{n\}m"),
    ],
)
def test_bad_values_raise_clear_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_config("mini", **kwargs)


def test_any_rotation_order_is_a_valid_group():
    assert make_config("mini", group="p6").group == "p6"
    assert make_config("mini", group="D5").group == "D5"  # kept as written; gsa.groups.get reads it


def test_unknown_recipe_lists_choices():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; choose one of: mini, rotmnist, cifar10, pcam"):
        get_recipe("nope")


def test_config_round_trips_through_json(tmp_path):
    cfg = make_config("pcam", patch_size=0, grad_clip=1.0, model_args={"num_heads": 3})
    cfg.save(tmp_path)
    back = TrainConfig.load(tmp_path)
    assert back == cfg and back.global_attention
    assert config_diff(cfg, back) == {}


def test_load_keeps_unknown_fields_in_extra(tmp_path):
    (tmp_path / "config.json").write_text('{"recipe": "mini", "future_field": 3}')
    assert TrainConfig.load(tmp_path).extra == {"future_field": 3}


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        TrainConfig.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read run configuration"):
        TrainConfig.load(tmp_path)


def test_every_recipe_builds_a_valid_config():
    for name in RECIPES:
        assert make_config(name).recipe == name


def test_global_attention_is_none_and_old_configs_spelling_zero_still_load():
    cfg = make_config("mini", patch_size=None)
    assert cfg.patch_size is None and cfg.global_attention
    legacy = make_config("mini", patch_size=0)  # config.json files written before gsa 0.2
    assert legacy.patch_size is None and legacy.global_attention
    for bad in (-3, 4, True, 2.5):
        with pytest.raises(ConfigError, match="--patch-size must be odd"):
            make_config("mini", patch_size=bad)
