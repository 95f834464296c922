"""RecBole ``Config`` for plugin and built-in models, with the package's protocol and checks.

Differences from ``recbole.config.Config`` (everything else is RecBole's):

- model names resolve case-insensitively and through aliases (``Fuxi-MME``); an unknown name
  fails at once, listing plugin and built-in names;
- besides RecBole's own defaults it reads ``yaml/overall.yaml`` (for plugin models right after
  RecBole's ``overall.yaml``, before the model YAML), then, after RecBole's dataset and
  quick-start YAML, the evaluation protocol ``yaml/protocol/loo-full.yaml`` (sequential models)
  and ``yaml/dataset/<dataset>.yaml`` when present; config files, ``config_dict`` and
  ``cmd_args`` still override them;
- it never reads ``sys.argv`` (RecBole's does, F9): command-line overrides arrive explicitly
  as ``cmd_args`` and keep their top priority; values are parsed with ``ast.literal_eval``,
  never ``eval``;
- ``train_neg_sample_args`` follows ``loss_type`` unless set explicitly (CE: none; BPR: one
  uniform negative), where RecBole 1.2.1 raises for CE with its own default;
- ``CUDA_VISIBLE_DEVICES`` set by the environment (e.g. by Ray for a GPU trial) is kept
  unless ``gpu_id`` is given explicitly (RecBole overwrites it, F12);
- every key is checked before RecBole's own checks and before any data is loaded, and all
  problems are raised at once: RecBole's keys (:mod:`recbole_hymoe.recbole_keys`), the training
  regime, the plugin model's hyperparameters, and keys nobody reads (an error when they look like
  a misspelling of a known key);
- ``use_gpu: False`` trains on the CPU (RecBole 1.2.1 picks the device from ``gpu_id`` alone);
- atomic files that start with a UTF-8 byte-order mark are read as ``utf-8-sig``.
"""

import ast
import difflib
import functools
import os
import re
from logging import getLogger
from pathlib import Path

import recbole
import recbole.trainer
import torch
import yaml
from recbole.config.configurator import Config as RecBoleConfig
from recbole.utils import InputType, ModelType
from recbole.utils.argument_list import (
    dataset_arguments,
    evaluation_arguments,
    general_arguments,
    training_arguments,
)

from recbole_hymoe import registry
from recbole_hymoe.atomic import atomic_paths, bom_encoding, header_fields
from recbole_hymoe.data import check_regime
from recbole_hymoe.errors import ConfigError, DatasetNotFoundError, listing
from recbole_hymoe.nn.scan import backend_problem
from recbole_hymoe.recbole_keys import recbole_problems

PROTOCOL_YAML = registry.YAML_DIR / "protocol" / "loo-full.yaml"
OVERALL_YAML = registry.YAML_DIR / "overall.yaml"
DATASET_YAML_DIR = registry.YAML_DIR / "dataset"

# Keys that belong to the plugin's model families: an unread one is an error, not a warning.
PLUGIN_PREFIXES = ("moe_", "mamba_", "rope_", "hyp_", "vgae_", "graph_")
_DEFAULT_NEG_SAMPLING = {"distribution": "uniform", "sample_num": 1}
# A batch of the all_positions regime holds whole sequences, not single targets: RecBole's 2048
# would be one step per ml-100k epoch. 128 is SASRec's original batch size (a default only).
ALL_POSITIONS_BATCH_SIZE = 128


def parse_value(text):
    """Turn a command-line string into a Python value without ``eval``.

    ``"0.5"`` -> 0.5, ``"[5, 10]"`` -> [5, 10], ``"true"``/``"False"`` -> bool,
    ``"none"``/``"null"``/``"~"`` -> None, anything else stays a string.
    """
    if not isinstance(text, str):
        return text
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null", "~"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _yaml_keys(path):
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return set(data) if isinstance(data, dict) else set()


@functools.lru_cache(maxsize=1)
def recbole_known_keys():
    """Every config key RecBole 1.2.1 defines in a YAML or reads in its source, plus ours."""
    root = Path(recbole.__file__).parent
    keys = set(general_arguments + training_arguments + evaluation_arguments + dataset_arguments)
    for path in (root / "properties").rglob("*.yaml"):
        keys |= _yaml_keys(path)
    for path in registry.YAML_DIR.rglob("*.yaml"):
        keys |= _yaml_keys(path)
    pattern = re.compile(r"""config(?:\[|\.get\()\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")
    for path in root.rglob("*.py"):
        keys |= set(pattern.findall(path.read_text(encoding="utf-8")))
    keys |= {"model", "dataset", "config_files", "nproc", "world_size", "ip", "port", "offset",
             "run_dir", "wandb_project", "log_wandb"}
    return frozenset(keys)


class Config(RecBoleConfig):
    """RecBole ``Config`` that knows plugin models and applies the package's protocol.

    Args:
        model (str or type, optional): model name (case-insensitive, aliases allowed) or class.
        dataset (str, optional): dataset name.
        config_file_list (list[str], optional): YAML files, later ones win.
        config_dict (dict, optional): overrides above the files.
        cmd_args (dict, optional): command-line overrides (strings are parsed), above everything.

    Raises:
        UnknownModelError: the model name is unknown.
        ConfigError: values are invalid or keys look misspelt (all of them listed).
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self._cmd_args = dict(cmd_args or {})
        missing = [str(f) for f in config_file_list or [] if not Path(f).is_file()]
        if missing:
            raise ConfigError(f"config file(s) not found: {', '.join(missing)}")
        if isinstance(model, str):
            model = registry.resolve_model_name(model)
        super().__init__(model, dataset, config_file_list, config_dict)  # checks in _set_default_parameters
        self.final_config_dict["config_files"] = list(config_file_list or [])

    # ------------------------------------------------------------------ RecBole hooks
    def _load_cmd_line(self):
        return {key: parse_value(value) for key, value in self._cmd_args.items()}

    def _get_model_and_dataset(self, model, dataset):
        if model is None and isinstance(self.external_config_dict.get("model"), str):
            model = registry.resolve_model_name(self.external_config_dict["model"])
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        if not registry.is_plugin_model(model):  # plugin models got it right after RecBole's overall.yaml
            self._update_internal_config_dict(str(OVERALL_YAML))
        if model_class.type == ModelType.SEQUENTIAL:
            self._update_internal_config_dict(str(PROTOCOL_YAML))
        dataset_yaml = DATASET_YAML_DIR / f"{dataset}.yaml"
        if dataset_yaml.is_file():
            self._update_internal_config_dict(str(dataset_yaml))

    def _set_default_parameters(self):
        final = self.final_config_dict
        neg = final.get("train_neg_sample_args")
        if isinstance(neg, dict) and str(neg.get("distribution")).lower() == "none":
            final["train_neg_sample_args"] = None  # RecBole's own "no sampling" form
        loss_type = final.get("loss_type")
        if "train_neg_sample_args" not in self.external_config_dict and loss_type is not None:
            # CE and SSM need no sampled rows; all-positions BPR draws its negatives in the model.
            if loss_type in ("CE", "SSM") or final.get("train_regime") == "all_positions":
                final["train_neg_sample_args"] = None
            elif loss_type == "BPR" and final.get("train_neg_sample_args") is None:
                final["train_neg_sample_args"] = dict(_DEFAULT_NEG_SAMPLING)
        if final.get("train_regime") == "all_positions" and "train_batch_size" not in self.external_config_dict:
            final["train_batch_size"] = ALL_POSITIONS_BATCH_SIZE
        if final.get("train_regime") == "all_positions" and "transform" not in self.external_config_dict:
            final["transform"] = None  # BERT4Rec's masking happens in the loss (recbole_hymoe.baselines)
        if (final.get("train_regime") == "all_positions" and self.model == "BERT4Rec"
                and "ft_ratio" not in self.external_config_dict):
            # NOTE: RecBole's fine-tuning batches (ft_ratio 0.5 in its BERT4Rec.yaml) mask the last item
            # of each prefix row, so over a prefix epoch every item is a fine-tuning target once. A
            # window has one last item, the same target every epoch, and with those batches
            # BERT4Rec plateaued at valid NDCG@10 0.068 on ml-100k (patience 10 or 50); without them
            # it reaches 0.106 (0.113 with patience 50). No one-pass window analogue exists (each
            # position masked with only its left context visible), so all_positions trains the cloze
            # batches only unless the user sets ft_ratio (README, RecBole's baselines).
            final["ft_ratio"] = 0.0
        self._check()  # RecBole's own checks below raise on the first problem, some with a traceback
        super()._set_default_parameters()
        if loss_type == "SSM" and "MODEL_INPUT_TYPE" not in final:
            final["MODEL_INPUT_TYPE"] = InputType.POINTWISE  # RecBole knows only CE and BPR
        self._default_load_col()
        if bom_encoding(self):
            final["encoding"] = "utf-8-sig"

    def _default_load_col(self):
        """Load the id, rating and time columns the file has, unless ``load_col`` is set explicitly.

        RecBole's default loads only user and item ids, so time-ordered leave-one-out (``order:
        TO``) fails on any dataset without a dataset YAML; the file's header says what exists.
        """
        if "load_col" in self.external_config_dict:
            return
        inter = [path for path, source in atomic_paths(self) if source == "inter"]
        header = header_fields(inter[0], self) if inter else None
        if header is None:
            return
        wanted = [self.final_config_dict.get(k)
                  for k in ("USER_ID_FIELD", "ITEM_ID_FIELD", "RATING_FIELD", "TIME_FIELD")]
        load_col = dict(self.final_config_dict.get("load_col") or {})
        load_col["inter"] = [field for field in wanted if field in header]
        self.final_config_dict["load_col"] = load_col
        time_field = self.final_config_dict.get("TIME_FIELD")
        order = (self.final_config_dict.get("eval_args") or {}).get("order")
        # Without a time column the package's sequential datasets order interactions by file row.
        self.final_config_dict["time_from_file_order"] = order == "TO" and time_field not in header

    def _init_device(self):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and "gpu_id" not in self.external_config_dict:
            self.final_config_dict["gpu_id"] = visible
        super()._init_device()
        self._check_scan_backend()
        if self.final_config_dict["use_gpu"] is False and self.final_config_dict["single_spec"]:
            self.final_config_dict["device"] = torch.device("cpu")

    # ------------------------------------------------------------------ checks
    def _check_scan_backend(self):
        """An explicit ``mamba_scan_backend`` must run on the device RecBole chose (known only now)."""
        final = self.final_config_dict
        keys = {param.key for param in getattr(self.model_class, "PARAMS", ())}
        if "mamba_scan_backend" not in keys or final.get("backbone", "mamba") != "mamba":
            return
        problem = backend_problem(final["mamba_scan_backend"], final["device"])
        if problem:
            raise ConfigError(f"mamba_scan_backend={final['mamba_scan_backend']!r} cannot run on device "
                              f"{final['device']}: {problem}")

    def _check(self):
        """Check every key, before RecBole's own checks and before any data is read.

        Raises:
            ConfigError: listing every problem: misspelt keys, RecBole's keys, the training
                regime, the plugin model's hyperparameters.
        """
        final = self.final_config_dict
        final["model"], final["dataset"] = self.model, self.dataset  # RecBole sets them after its checks
        user_keys = set(self.file_config_dict) | set(self.variable_config_dict) | set(self.cmd_config_dict)
        plugin = registry.is_plugin_model(self.model)
        sequential = self.model_class.type == ModelType.SEQUENTIAL
        problems, model_keys = self._key_problems(user_keys, plugin)
        problems += recbole_problems(final, sequential, user_keys)
        if sequential:
            try:
                check_regime(self, plugin)
            except ConfigError as err:
                problems.append(str(err))
            except TypeError:
                pass  # a MAX_ITEM_LIST_LENGTH that is not a number, reported above
        elif final.get("train_regime") == "all_positions":
            problems.append(f"train_regime='all_positions' applies to sequential models only and {self.model} "
                            f"is not one: leave train_regime at 'prefix' (the default) for it")
        problems += self._precision_problems(sequential, plugin)
        if plugin:
            problems += self.model_class.read_config(self)[1]
        if problems:
            unknown = any(f"is not a key of {self.model}" in p for p in problems)
            allowed = f"\n  keys of {self.model}: {', '.join(sorted(model_keys))}" if unknown else ""
            raise ConfigError(listing(f"invalid configuration of {self.model}", problems) + allowed)

    def _precision_problems(self, sequential, plugin):
        """``precision: bf16`` needs the package's trainer: sequential models without a trainer of their own."""
        final = self.final_config_dict
        if final.get("precision") != "bf16":
            return []
        own_trainer = not plugin and hasattr(recbole.trainer, f"{self.model}Trainer")
        if not sequential or own_trainer:
            return [f"precision='bf16' is available for sequential models trained by RecBole's plain Trainer "
                    f"(every plugin model, RecBole's SASRec, GRU4Rec, NARM, BERT4Rec, …), not {self.model}: "
                    "use precision='fp32'"]
        if final.get("enable_amp"):
            return ["enable_amp=True and precision='bf16' both ask for autocast: keep precision='bf16' "
                    "(bfloat16 on every device) and set enable_amp=False"]
        return []

    def _key_problems(self, user_keys, plugin):
        """Misspelt or foreign keys among ``user_keys``; keys nobody reads are only logged.

        Returns:
            tuple[list[str], set[str]]: the problems, and the keys the plugin model reads.
        """
        known = recbole_known_keys() | set(self.internal_config_dict)
        model_keys = {p.key for p in self.model_class.PARAMS} if plugin else set()
        problems, unread = [], []
        for key in sorted(user_keys):
            if key in model_keys or (key in known and not (plugin and key.startswith(PLUGIN_PREFIXES))):
                continue
            close = difflib.get_close_matches(key, sorted(known | model_keys), n=1, cutoff=0.8)
            if plugin and key.startswith(PLUGIN_PREFIXES):
                hint = f"; did you mean {close[0]!r}?" if close and close[0] in model_keys else ""
                problems.append(f"{key!r} is not a key of {self.model}{hint}")
            elif close:
                problems.append(f"unknown key {key!r}; did you mean {close[0]!r}?")
            else:
                unread.append(key)
        if unread:
            getLogger().warning(f"config keys not read by RecBole or {self.model}: {', '.join(unread)}")
        return problems, model_keys


def check_dataset_files(config):
    """Fail clearly, before loading, when the dataset's atomic files are not on disk.

    RecBole would otherwise try to download the dataset (a hang or a prompt without network).
    ``allow_download: True`` lets RecBole's own downloader try.

    Raises:
        DatasetNotFoundError: saying which file is missing and where the atomic files go.
    """
    if config["allow_download"]:
        return
    folder = Path(config["data_path"])
    name = config["dataset"]
    suffixes = config["benchmark_filename"] or [None]
    expected = [folder / (f"{name}.{s}.inter" if s else f"{name}.inter") for s in suffixes]
    missing = [str(path) for path in expected if not path.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"dataset {name!r} not found: missing {', '.join(missing)}.\n"
            f"  Put its RecBole atomic files ({name}.inter, optionally {name}.user / {name}.item) in "
            f"{folder}{os.sep}, or point --data_path at the folder that contains {name}{os.sep}.\n"
            "  Nothing is downloaded unless you pass --allow_download=True (RecBole's own "
            "downloader; needs internet)."
        )
