"""The name registry helper (:mod:`gsa.registry`) and the one alias rule of gsa's four registries."""

from __future__ import annotations

import pytest

from gsa.registry import Registry, normalize


def _colours() -> Registry[int]:
    reg: Registry[int] = Registry("colour")
    reg.register("dark-red", 1, aliases=("maroon",))
    reg.register("blue", 2)
    return reg


def test_normalize_ignores_case_whitespace_and_separators():
    assert normalize("  Dark-Red ") == normalize("dark_red") == normalize("DARK RED") == normalize("darkred")
    assert normalize("se2(4)") == "se2(4)"  # other characters are kept


def test_get_accepts_every_spelling_and_aliases():
    reg = _colours()
    for spelling in ("dark-red", "Dark_Red", " DARK RED ", "darkred", "Maroon", "ma-roon"):
        assert reg.get(spelling) == 1
        assert reg.canonical(spelling) == "dark-red"
        assert spelling in reg
    assert "green" not in reg and 3 not in reg


def test_names_list_registered_names_in_order_without_aliases():
    reg = _colours()
    assert reg.names() == ["dark-red", "blue"] == list(reg)
    assert len(reg) == 2
    assert "dark-red" in repr(reg)


def test_unknown_name_is_one_line_listing_the_choices():
    with pytest.raises(ValueError) as e:
        _colours().get("green")
    assert str(e.value) == "unknown colour 'green'; expected one of: dark-red, blue"
    with pytest.raises(TypeError, match="colour name must be a string"):
        _colours().get(3)


def test_error_class_prompt_and_extra_forms():
    class MyError(ValueError):
        pass

    reg = Registry("shape", {"square": 4}, error=MyError, prompt="choose one of", extra=("poly:N",))
    with pytest.raises(MyError, match=r"^unknown shape 'circle'; choose one of: square, poly:N$"):
        reg.get("circle")


def test_duplicates_are_refused():
    reg = _colours()
    for name in ("dark-red", "DarkRed", "maroon", "Blue"):
        with pytest.raises(ValueError, match="already registered"):
            reg.register(name, 9)
    with pytest.raises(ValueError, match="already registered"):
        reg.alias("dark red", "blue")
    with pytest.raises(ValueError, match="no colour 'green' is registered"):
        reg.alias("lime", "green")
    with pytest.raises(ValueError, match="collide"):
        Registry("colour", {"dark-red": 1, "dark_red": 2})
    assert reg.names() == ["dark-red", "blue"]


def test_a_shared_dict_is_served_live():
    items = {"a": 1}
    reg = Registry("letter", items)
    items["b-b"] = 2  # added to the dict directly, as users may do with PRESETS / RECIPES
    assert reg.get("BB") == 2 and reg.names() == ["a", "b-b"]


def test_choice_tuples_are_defined_once():
    """gsa.train.config re-uses gsa.nn.blocks' tuples and the CLI offers exactly these choices."""
    import argparse

    from gsa import cli
    from gsa.nn import blocks
    from gsa.train import config

    assert config.NORMS is blocks.NORMS and config.ACTIVATIONS is blocks.ACTIVATIONS
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    choices = {a.dest: a.choices for a in train._actions if a.choices}
    assert choices == {
        "norm": config.NORMS,
        "activation": config.ACTIVATIONS,
        "optimizer": config.OPTIMIZERS,
        "scheduler": config.SCHEDULERS,
        "precision": config.PRECISIONS,
        "loader": config.LOADERS,
        "progress": config.PROGRESS_MODES,
        "input_stats": config.INPUT_STATS,
    }


def _odd(name: str) -> str:
    """``"rotmnist-mini"`` -> ``" R-OTMNIST_MINI "``: case, separators and whitespace changed."""
    return f" {name[0].upper()}-{name[1:].upper().replace('-', '_')} "


def test_the_four_registries_share_the_alias_rule():
    from gsa import data, groups, models, train

    assert groups.list_groups() == groups.names()
    for name in groups.list_groups():
        assert groups.get(_odd(name)) is groups.get(name)
    for name in models.list_presets():
        assert models.preset_config(_odd(name)) == models.preset_config(name)
    for name in data.list_datasets():
        assert data.info(_odd(name)).name == name
    for name in train.list_recipes():
        assert train.get_recipe(_odd(name)) is train.RECIPES[name]


def test_the_four_registries_share_the_error_format():
    from gsa import data, groups, models, train

    cases = [
        (groups.get, "group", ValueError, [*groups.list_groups(), *groups.PATTERNS]),
        (models.preset_config, "preset", ValueError, list(models.PRESETS)),
        (data.info, "dataset", ValueError, [*data.list_datasets(), *data.CUSTOM_FORMS]),
        (train.get_recipe, "recipe", train.ConfigError, train.list_recipes()),
    ]
    for lookup, kind, error, names in cases:
        with pytest.raises(error) as e:
            lookup("nope")
        message = str(e.value)
        assert message.startswith(f"unknown {kind} 'nope'; ") and "\n" not in message
        assert message.endswith(" one of: " + ", ".join(names))
