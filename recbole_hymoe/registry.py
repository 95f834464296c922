"""Name -> class registry that makes plugin models visible to every RecBole lookup.

RecBole finds a model by importing ``recbole.model.<kind>.<name.lower()>`` (``get_model``), a
trainer by ``getattr(recbole.trainer, name + "Trainer")`` (``get_trainer``) and its default
YAML only inside its own package. Registering a model therefore

1. aliases the model's module in ``sys.modules`` under RecBole's module path, so ``get_model``
   in every module (including the copies bound at import time in ``recbole.quick_start``),
   ``load_data_and_model`` and Ray workers find it without patching;
2. optionally exposes ``<Name>Trainer`` on ``recbole.trainer``;
3. lets one wrapper around ``Config._update_internal_config_dict`` read ``yaml/overall.yaml``
   (the plugin's own settings) and ``yaml/model/<Name>.yaml`` right after RecBole's
   ``overall.yaml``, exactly where RecBole reads a built-in model's YAML, so dataset YAML,
   files, dicts and the command line still override them.
"""

import difflib
import importlib
import os
import sys
from pathlib import Path

import recbole
import recbole.model
import recbole.trainer
from recbole.config.configurator import Config as _RecBoleConfig
from recbole.utils import ModelType

from recbole_hymoe.errors import UnknownModelError
from recbole_hymoe.paths import YAML_DIR

RECBOLE_MODEL_DIR = Path(recbole.__file__).parent / "properties" / "model"  # one defaults YAML per built-in
_KIND_PACKAGES = {
    ModelType.GENERAL: "general_recommender",
    ModelType.CONTEXT: "context_aware_recommender",
    ModelType.SEQUENTIAL: "sequential_recommender",
    ModelType.KNOWLEDGE: "knowledge_aware_recommender",
}
# exlib_recommender is left out on purpose: importing it needs lightgbm and xgboost.
_SEARCHED_PACKAGES = tuple(_KIND_PACKAGES.values())

_models = {}  # canonical name -> class
_yaml_files = {}  # canonical name -> Path
_aliases = {}  # lower-case alias -> canonical name (plugin and built-in)


def _module_path(kind, name):
    return f"recbole.model.{kind}.{name.lower()}"


def _recbole_has_module(name):
    for kind in _SEARCHED_PACKAGES:
        path = _module_path(kind, name)
        if importlib.util.find_spec(path) is not None:
            return path
    return None


def register_model(cls, yaml_file, trainer=None, dataset=None, aliases=()):
    """Make ``cls`` findable by name everywhere RecBole looks.

    Args:
        cls (type): a RecBole recommender class; ``cls.__name__`` is its public name.
        yaml_file (Path): its default configuration.
        trainer (type, optional): trainer class exposed as ``recbole.trainer.<Name>Trainer``.
        dataset (type, optional): dataset class exposed as ``recbole.data.dataset.<Name>Dataset``
            (what RecBole's ``create_dataset`` builds for the model).
        aliases (Iterable[str]): extra names accepted case-insensitively (e.g. ``"Fuxi-MME"``).

    Raises:
        ValueError: the name is taken by a RecBole built-in or another plugin model.
    """
    name = cls.__name__
    if name in _models:
        if _models[name] is cls:
            return
        raise ValueError(f"model name {name!r} is already registered by {_models[name].__module__}")
    kind = _KIND_PACKAGES[cls.type]
    taken = _recbole_has_module(name)
    if taken is not None:
        raise ValueError(f"model name {name!r} would shadow RecBole's built-in module {taken}")
    if not Path(yaml_file).is_file():
        raise FileNotFoundError(f"default configuration of {name} not found: {yaml_file}")

    module = sys.modules[cls.__module__]
    alias_path = _module_path(kind, name)
    sys.modules[alias_path] = module
    setattr(importlib.import_module(f"recbole.model.{kind}"), name.lower(), module)
    if trainer is not None:
        setattr(recbole.trainer, f"{name}Trainer", trainer)
    if dataset is not None:
        register_dataset(name, dataset)

    _models[name] = cls
    _yaml_files[name] = Path(yaml_file)
    for alias in (name, *aliases):
        _aliases[alias.lower()] = name


def register_dataset(name, dataset):
    """Make RecBole's ``create_dataset`` build ``dataset`` for model ``name`` (it looks up
    ``recbole.data.dataset.<Name>Dataset`` first); also used for built-in models."""
    setattr(importlib.import_module("recbole.data.dataset"), f"{name}Dataset", dataset)


def plugin_models():
    """Return the names of the registered plugin models, sorted."""
    return sorted(_models)


def builtin_models():
    """Return the names of RecBole's built-in models (one default YAML each), sorted."""
    return sorted(p.stem for p in RECBOLE_MODEL_DIR.glob("*.yaml") if p.stem not in ("lightgbm", "xgboost"))


def is_plugin_model(name):
    """Return True if ``name`` is a registered plugin model's canonical name."""
    return name in _models


def model_class(name):
    """Return the class of plugin model ``name`` (canonical name)."""
    return _models[name]


def model_yaml(name):
    """Return the default YAML path of model ``name`` (canonical name): ours for a plugin model,
    RecBole's for a built-in one (a model without defaults may have none)."""
    return _yaml_files[name] if name in _models else RECBOLE_MODEL_DIR / f"{name}.yaml"


def resolve_model_name(name):
    """Return the canonical spelling of a plugin or built-in model name (case-insensitive).

    Raises:
        UnknownModelError: listing the plugin and built-in names, with close matches first.
    """
    if not isinstance(name, str):
        return name
    if name in _models:
        return name
    key = name.lower()
    if key in _aliases:
        return _aliases[key]
    builtins = {b.lower(): b for b in builtin_models()}
    if key in builtins:
        return builtins[key]
    close = difflib.get_close_matches(key, [*_aliases, *builtins], n=3, cutoff=0.6)
    suggestion = ""
    if close:
        spelled = [_aliases.get(c) or builtins[c] for c in close]
        suggestion = f" Did you mean {', '.join(dict.fromkeys(spelled))}?"
    raise UnknownModelError(
        f"unknown model {name!r}.{suggestion}\n"
        f"  plugin models: {', '.join(plugin_models())}\n"
        f"  RecBole built-in models: {', '.join(builtin_models())}"
    )


PLUGIN_OVERALL_YAML = YAML_DIR / "overall.yaml"


def _load_plugin_yaml_after_overall(update):
    def _update_internal_config_dict(self, file):
        config_dict = update(self, file)
        model = getattr(self, "model", None)
        if (Path(file).resolve() != PLUGIN_OVERALL_YAML and os.path.basename(file) == "overall.yaml"
                and model in _models):
            update(self, str(PLUGIN_OVERALL_YAML))  # the plugin's own settings (training regime, …)
            update(self, str(_yaml_files[model]))
        return config_dict

    _update_internal_config_dict.__recbole_hymoe_original__ = update
    return _update_internal_config_dict


def install_config_hook():
    """Wrap ``Config._update_internal_config_dict`` once so plugin YAML loads like built-in YAML."""
    current = _RecBoleConfig._update_internal_config_dict
    if not hasattr(current, "__recbole_hymoe_original__"):
        _RecBoleConfig._update_internal_config_dict = _load_plugin_yaml_after_overall(current)
