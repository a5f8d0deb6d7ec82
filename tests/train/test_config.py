import json
import sys
from pathlib import Path

import pytest

from gsa.errors import ConfigError
from gsa.train.config import RECIPES, TrainConfig, config_diff, config_from_file, get_recipe, make_config

#: the mini recipe's model_args, written out once (the recipe is compared with these literal values)
MINI_MODEL_ARGS = {
    "channels": 24,
    "num_heads": 2,
    "lifting_heads": 8,
    "readout": "sum",
    "input_pool": 2,
    "crop": 0,
    "norm": "batch",
}


def test_paper_recipes_match_appendix_f():
    r = get_recipe("rotmnist")
    assert (r.optimizer, r.lr, r.weight_decay, r.batch_size, r.epochs, r.attention_dropout) == (
        "adam",
        1e-3,
        1e-4,
        8,
        300,
        0.1,
    )
    c = get_recipe("cifar10")
    assert (c.optimizer, c.momentum, c.scheduler, c.lr, c.batch_size, c.epochs, c.weight_decay) == (
        "sgd",
        0.9,
        "cosine",
        0.01,
        24,
        350,
        1e-4,
    )
    p = get_recipe("pcam")
    assert (p.optimizer, p.scheduler, p.lr, p.batch_size, p.epochs) == ("sgd", "cosine", 0.01, 8, 100)
    m = get_recipe("mini")
    assert (m.dataset, m.group, m.patch_size, m.optimizer, m.lr) == ("rotmnist-mini", "p4", 3, "adam", 5e-3)
    assert (m.batch_size, m.epochs, m.scheduler, m.warmup_epochs) == (16, 5, "cosine", 0.1)
    assert m.model_args == MINI_MODEL_ARGS


def test_cosine_recipes_warm_up_ten_epochs_as_the_original_code():
    """The original's only cosine schedule (``linear_warmup_cosine``) warmed up linearly for 10 epochs;
    rotMNIST's constant schedule had none."""
    assert (get_recipe("cifar10").warmup_epochs, get_recipe("pcam").warmup_epochs) == (10.0, 10.0)
    assert get_recipe("rotmnist").warmup_epochs == 0.0


def test_a_recipes_warmup_is_cut_to_a_shorter_run_but_an_explicit_one_must_fit(tmp_path):
    assert make_config("cifar10").warmup_epochs == 10.0
    assert make_config("cifar10", epochs=3).warmup_epochs == 3.0  # the whole run warms up
    assert make_config("cifar10", epochs=3, warmup_epochs=0.5).warmup_epochs == 0.5
    with pytest.raises(ConfigError, match="--warmup-epochs must be in"):
        make_config("cifar10", epochs=3, warmup_epochs=10.0)
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"recipe": "pcam", "epochs": 2}))
    assert config_from_file(path).warmup_epochs == 2.0
    assert config_from_file(path, epochs=50).warmup_epochs == 10.0
    path.write_text(json.dumps({"recipe": "pcam", "epochs": 2, "warmup_epochs": 10}))
    with pytest.raises(ConfigError, match="exp.json: --warmup-epochs must be in"):
        config_from_file(path)


def test_cifar10_recipe_trains_with_the_codes_dropout_and_dropout_still_overrides_it():
    from gsa.models import CIFAR10_DROPOUT, preset_config
    from gsa.train.hooks import DataSpec, _model_config_fields, model_overrides

    spec = DataSpec("cifar10", in_channels=3, num_classes=10, image_size=(32, 32))

    def rates(cfg):
        net = preset_config("cifar10", group=cfg.group, **model_overrides(cfg, spec, _model_config_fields()))
        return {"input_dropout": net.input_dropout, "dropout_after_pool": net.dropout_after_pool}

    assert rates(make_config("cifar10")) == CIFAR10_DROPOUT["code"] == {"input_dropout": 0.2, "dropout_after_pool": 0.3}
    assert rates(make_config("cifar10", dropout=0.5))["dropout_after_pool"] == 0.5
    paper = make_config("cifar10", dropout=0.2, model_args={"input_dropout": 0.3})
    assert rates(paper) == CIFAR10_DROPOUT["paper"]


def test_model_args_merge_recipe_and_overrides():
    cfg = make_config("mini", model_args={"num_heads": 2, "whitening_scale": 1.0})
    assert cfg.model_args == {**MINI_MODEL_ARGS, "whitening_scale": 1.0}
    assert get_recipe("mini").model_args == MINI_MODEL_ARGS  # not mutated
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
        ({"input_stats": "imagenet"}, "^unknown input statistics 'imagenet'; choose one of: dataset, original$"),
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


@pytest.mark.parametrize(
    "field, value, kind",
    [
        ("lr", "abc", "a number"),
        ("epochs", [1], "an integer"),
        ("epochs", 2.5, "an integer"),
        ("workers", "2", "an integer"),
        ("normalize", "yes", "true or false"),
        ("dataset", 5, "a string"),
        ("eval_batch_size", "big", "an integer or null"),
        ("model_args", [1], "a mapping"),
        ("seed", True, "an integer"),
    ],
)
def test_load_refuses_a_wrong_type_naming_the_field(tmp_path, field, value, kind):
    cfg = make_config("mini").to_dict()
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=f"config.json: config field '{field}' must be {kind}, got"):
        TrainConfig.load(tmp_path)
    cfg[field] = make_config("mini").to_dict()[field]
    assert TrainConfig.from_dict(cfg) == make_config("mini")


# ---------------------------------------------------------------------- configuration files
def test_config_file_round_trips_a_saved_config(tmp_path):
    cfg = make_config("cifar10", patch_size=None, grad_clip=1.0, max_steps=7, model_args={"num_heads": 3}, seed=4)
    path = cfg.save(tmp_path)
    assert config_from_file(path) == cfg
    assert config_from_file(tmp_path) == cfg  # a run directory means its config.json


def test_config_file_gaps_come_from_its_recipe_and_recipe_argument_replaces_it(tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(
        json.dumps({"recipe": "cifar10", "epochs": 3, "attention_dropout": None, "model_args": {"num_heads": 4}})
    )
    cfg = config_from_file(path)
    assert (cfg.recipe, cfg.optimizer, cfg.batch_size, cfg.epochs) == ("cifar10", "sgd", 24, 3)
    assert cfg.model_args == {"num_heads": 4} and cfg.attention_dropout is None
    other = config_from_file(path, recipe="mini")
    assert (other.recipe, other.optimizer, other.batch_size, other.epochs, other.lr) == ("mini", "adam", 16, 3, 5e-3)
    assert other.model_args == {"num_heads": 4}  # the file's model_args replace the recipe's
    assert other.attention_dropout is None  # the file's null is a value (mini has 0.0)
    path.write_text(json.dumps({"epochs": 2}))
    assert config_from_file(path) == make_config("mini", epochs=2)  # no "recipe": the default one


def test_config_file_overrides_win_none_included(tmp_path):
    path = make_config("mini", grad_clip=1.0, max_steps=20, lr=0.1).save(tmp_path)
    cfg = config_from_file(path, grad_clip=None, max_steps=None, patch_size=None, lr=0.2, model_args={"channels": 8})
    assert cfg.grad_clip is None and cfg.max_steps is None and cfg.patch_size is None and cfg.lr == 0.2
    assert cfg.model_args == {**MINI_MODEL_ARGS, "channels": 8}


def test_yaml_config_file(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "exp.yaml"
    path.write_text(
        "recipe: cifar10\nlr: 1e-5\nweight_decay: 5.0e-4\ngrad_clip: null\ndeterministic: true\n"
        "model_args:\n  num_heads: 4\n"
    )
    cfg = config_from_file(path)
    assert cfg.lr == 1e-5 and isinstance(cfg.lr, float) and cfg.weight_decay == 5e-4  # 1e-5: a float, as in JSON
    assert cfg.recipe == "cifar10" and cfg.deterministic is True and cfg.model_args == {"num_heads": 4}


def test_yaml_without_pyyaml_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    path = tmp_path / "exp.yml"
    path.write_text("epochs: 2\n")
    with pytest.raises(ConfigError, match=r"exp.yml: reading YAML needs PyYAML \(pip install pyyaml\)"):
        config_from_file(path)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("a.json", '{"bach_size": 3}', "a.json: unknown key 'bach_size' (did you mean 'batch_size'?)"),
        (
            "a.json",
            '{"batch-size": 3, "zzz": 1}',
            "a.json: unknown keys 'batch-size' (did you mean 'batch_size'?), 'zzz'",
        ),
        ("a.json", '{"epochs": "3"}', "a.json: config field 'epochs' must be an integer, got '3'"),
        ("a.json", '{"lr": true}', "a.json: config field 'lr' must be a number, got True"),
        ("a.json", '{"download": "yes"}', "a.json: config field 'download' must be true or false, got 'yes'"),
        ("a.json", '{"model_args": null}', "a.json: config field 'model_args' must be a mapping, got None"),
        ("a.json", '{"data_dir": 3}', "a.json: config field 'data_dir' must be a string or null, got 3"),
        ("a.json", '{"lr": -1}', "a.json: --lr must be > 0 (a finite number), got -1"),
        ("a.json", '{"recipe": "nope"}', "a.json: unknown recipe 'nope'; choose one of"),
        ("a.json", '{"epochs": 3,', "a.json: not valid JSON (Expecting property name"),
        ("a.json", "[1, 2]", "a.json: expected a mapping of configuration fields, got list"),
        (
            "a.yaml",
            "epochs: [3\nlr: 2\n",
            "a.yaml: not valid YAML (expected ',' or ']', but got ':' at line 2, column 3)",
        ),
        ("a.yaml", "", "a.yaml: expected a mapping of configuration fields, got NoneType"),
    ],
)
def test_config_file_errors_are_one_line_and_name_the_file(tmp_path, name, text, message):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        config_from_file(path)
    assert str(exc.value).startswith(str(tmp_path)) and message in str(exc.value) and "\n" not in str(exc.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.json: no such configuration file"):
        config_from_file(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="config.json: no such configuration file"):
        config_from_file(tmp_path)  # a directory without config.json


def test_validate_checks_every_fields_type():
    """Fields without a range check of their own: a wrong type is a ConfigError, not a TypeError later."""
    with pytest.raises(ConfigError, match="config field 'workers' must be an integer, got '2'"):
        TrainConfig(workers="2").validate()
    with pytest.raises(ConfigError, match="config field 'tensorboard' must be true or false, got 'no'"):
        make_config("mini", tensorboard="no")
    with pytest.raises(ConfigError, match=r"unknown config field 'bach_size' \(did you mean 'batch_size'\?\)"):
        make_config("mini", bach_size=3)
    assert make_config("mini", out=Path("runs") / "a").out == str(Path("runs") / "a")  # a Path is stored as a string
