"""Training and evaluation engine of gsa (used by the ``gsa`` command line).

Main entry points::

    from gsa.train import make_config, train, evaluate_run
    cfg = make_config("mini", epochs=1, max_steps=20, out="runs/demo")
    report = train(cfg)                      # writes runs/demo/{config.json, *.safetensors, metrics.csv, report.json, rotation.png}
    evaluate_run("runs/demo")["accuracy"]    # == report["test_accuracy"]

``train`` builds a :class:`Trainer` (``gsa.train.trainer``), which owns the run's state and
exposes its phases (``restore``, ``fit``, ``validate``, ``save_last``, ``test``, ``final_report``).
"""

from ..errors import CheckpointError, ConfigError, GsaError, NonFiniteLossError, TrainingInterrupted
from .config import RECIPES, Recipe, TrainConfig, config_from_file, get_recipe, list_recipes, make_config
from .engine import train
from .evaluate import evaluate_run
from .hooks import DataSpec, Hooks, get_hooks, load_hooks, set_hooks, use_hooks
from .info import count_flops, model_info
from .trainer import Trainer

__all__ = [
    "RECIPES",
    "Recipe",
    "TrainConfig",
    "get_recipe",
    "list_recipes",
    "make_config",
    "config_from_file",
    "train",
    "Trainer",
    "evaluate_run",
    "model_info",
    "count_flops",
    "Hooks",
    "DataSpec",
    "get_hooks",
    "load_hooks",
    "set_hooks",
    "use_hooks",
    "GsaError",
    "ConfigError",
    "CheckpointError",
    "NonFiniteLossError",
    "TrainingInterrupted",
]
