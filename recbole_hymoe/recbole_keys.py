"""RecBole's own config keys, checked before any data is loaded.

RecBole 1.2.1 reads its training, evaluation, data and device keys deep inside its dataset,
dataloader, trainer and evaluator, so a mistyped value fails there — after the data loaded,
sometimes after an epoch of training — with a traceback, or is silently replaced (an unknown
``learner`` trains with Adam, an unknown logging ``state`` logs at INFO, a malformed
``user_inter_num_interval`` filters nothing). Each rule below is what RecBole's code (or torch's,
which it calls) does with the value; :func:`recbole_problems` lists every violation, one line
per key, and :class:`~recbole_hymoe.config.Config` raises them together with the plugin's own
checks. Where RecBole accepts a value and acts on it (``epochs: 0`` tests the untrained model,
``eval_step: 0`` never validates, ``learning_rate: 0`` is legal for torch's optimizers) it is
accepted here too.
"""

import codecs
import difflib
import os
import re
from pathlib import Path

from recbole.evaluator.register import metric_types, metrics_dict
from recbole.utils import EvaluatorType

from recbole_hymoe.models.params import (
    Boolean,
    Choice,
    Integer,
    Nullable,
    Number,
    Param,
    anything,
    either,
    keyed,
    list_of,
    mapping,
    name,
    param_problems,
    text,
)
from recbole_hymoe.trainer import PRECISIONS

# Trainer._build_optimizer: any other name falls back to Adam with only a log warning.
LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam")
# recbole.utils.logger.init_logger: any other name logs at INFO.
LOG_LEVELS = ("info", "debug", "warning", "error", "critical")
# recbole.data.transform.construct_transform.
TRANSFORMS = ("mask_itemseq", "inverse_itemseq", "crop_itemseq", "reorder_itemseq", "user_defined")
# Dataset.leave_one_out.
LEAVE_ONE_OUT_MODES = ("valid_and_test", "valid_only", "test_only")
EVAL_ARGS_KEYS = ("split", "order", "group_by", "mode")
# Config._set_default_parameters fills an absent eval_args key with these (not the protocol's).
RECBOLE_EVAL_DEFAULTS = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}
NEG_SAMPLE_KEYS = ("distribution", "sample_num", "alpha", "dynamic", "candidate_num")
CLIP_GRAD_NORM_KEYS = ("max_norm", "norm_type", "error_if_nonfinite", "foreach")
# A GPU index, or the UUID forms CUDA_VISIBLE_DEVICES also accepts.
_DEVICE_TOKEN = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)$")
_EVAL_MODE = re.compile(r"^(full|labeled|(uni|pop)[1-9][0-9]*)$")


def gpu_ids():
    """Check ``gpu_id``: ``''`` (CPU), an index, ``'0,1'``, or a tuple of indices.

    RecBole joins a tuple with commas and ``str()``-s anything else into
    ``CUDA_VISIBLE_DEVICES``, so a list or ``None`` hides every GPU without a word.
    """

    def check(value):
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, str) and (not value.strip() or all(
                _DEVICE_TOKEN.match(token.strip()) for token in value.split(","))):
            return value
        raise ValueError("must be '' (CPU), a GPU index such as 0, or indices such as '0,1'")

    return check


def folder():
    """Check a folder path that can be created: a string, no existing file in the way."""

    def check(value):
        text()(value)
        path = Path(value).expanduser()
        for parent in (path, *path.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(f"is not a folder: {parent} is a file")
                if not os.access(parent, os.W_OK):
                    raise ValueError(f"cannot be written: {parent} is read-only")
                break
        return value

    return check


def encoding():
    """Check a text encoding Python knows (RecBole opens the atomic files with it)."""

    def check(value):
        try:
            codecs.lookup(text()(value))
        except LookupError:
            raise ValueError("is not a text encoding Python knows (e.g. 'utf-8', 'latin-1')") from None
        return value

    return check


def intervals():
    """Check an interval string such as ``'[5,inf)'`` or ``'(0,1];[3,4)'``, as RecBole parses it.

    RecBole's ``Dataset._parse_intervals_str`` skips a malformed interval with a log warning
    (so nothing is filtered) and raises on a non-number endpoint.
    """

    def check(value):
        for part in str(value).split(";"):
            part = part.strip()
            ends = part[1:-1].split(",")
            if len(part) < 2 or part[0] not in "([" or part[-1] not in ")]" or len(ends) != 2:
                raise ValueError(f"has a malformed interval {part!r}: write e.g. '[5,inf)' or '(0,10]'")
            try:
                low, high = float(ends[0]), float(ends[1])
            except ValueError:
                raise ValueError(f"has an interval {part!r} whose ends are not numbers") from None
            if low > high:
                raise ValueError(f"has an empty interval {part!r} (left end above right end)")
        return value

    return check


def metric_names():
    """Check ``metrics``: a name or a list of names of RecBole metrics (any case)."""
    known = sorted(cls.__name__ for cls in metrics_dict.values())

    def check(value):
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"must be a metric name or a list of them, from {known}")
        unknown = [n for n in names if n.lower() not in metric_types]
        if unknown:
            hints = [difflib.get_close_matches(n.lower(), list(metric_types), n=1, cutoff=0.6) for n in unknown]
            hint = "".join(f"; did you mean {metrics_dict[h[0]].__name__!r} for {n!r}?"
                           for n, h in zip(unknown, hints) if h)
            raise ValueError(f"names unknown metric(s) {unknown}{hint}; RecBole's metrics: {known}")
        return list(names)

    return check


def cutoffs():
    """Check ``topk``: a positive integer or a list of them."""
    positive = Integer(1)

    def check(value):
        ks = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        try:
            return list_of(positive)(ks)
        except ValueError:
            raise ValueError("must be a positive integer or a list of positive integers") from None

    return check


def split_ratios():
    """Check ``RS``/``TS`` ratios: three numbers ≥ 0 (train, valid, test), the first positive.

    ``data_preparation`` unpacks exactly three splits; a zero training ratio leaves nothing to
    train on (and makes the time-based split divide by zero).
    """

    def check(value):
        list_of(Number(0.0), length=3)(value)
        if value[0] <= 0:
            raise ValueError("needs a positive training ratio (the first of the three)")
        return value

    return check


def eval_modes():
    """Check ``eval_args['mode']``: one mode, or ``{'valid': mode, 'test': mode}``."""

    def one(mode):
        if not isinstance(mode, str) or not _EVAL_MODE.match(mode):
            raise ValueError(f"has a mode {mode!r} RecBole does not know: use 'full', 'labeled', 'uniN' or "
                             "'popN' (N ≥ 1)")
        return mode

    def check(value):
        if isinstance(value, dict):
            return keyed(("valid", "test"), valid=one, test=one)(value)
        return one(value)

    return check


def split_args():
    """Check ``eval_args['split']``: ``{'LS': mode}``, ``{'RS': ratios}`` or ``{'TS': ratios}``."""
    checks = {"LS": Choice(*LEAVE_ONE_OUT_MODES), "RS": split_ratios(), "TS": split_ratios()}

    def check(value):
        if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in checks:
            raise ValueError("must be {'LS': 'valid_and_test'|'valid_only'|'test_only'}, "
                             "{'RS': [train, valid, test]} or {'TS': [train, valid, test]}")
        (kind, arg), = value.items()
        try:
            checks[kind](arg)
        except ValueError as err:
            raise ValueError(f"{err} for {kind!r}") from None
        return value

    return check


def eval_args():
    """Check the shape of ``eval_args`` (what each model type may use is checked separately)."""
    return keyed(EVAL_ARGS_KEYS, split=split_args(), order=Choice("RO", "TO"),
                 group_by=Choice("user", "none", None), mode=eval_modes())


def clip_args():
    """Check ``clip_grad_norm``: keyword arguments of torch's ``clip_grad_norm_``, or ``{}`` (off).

    RecBole calls ``clip_grad_norm_(params, **clip_grad_norm)`` at the first training step, so a
    bare number fails there; a max_norm ≤ 0 would zero or flip every gradient.
    """
    positive = Number(0.0, min_exclusive=True)
    args = keyed(CLIP_GRAD_NORM_KEYS, ("max_norm",), max_norm=positive,
                 norm_type=either(positive, Choice("inf"), message="must be a number > 0 or 'inf'"),
                 error_if_nonfinite=Boolean(), foreach=Nullable(Boolean()))

    def check(value):
        if value == {}:
            return value
        if not isinstance(value, dict):
            raise ValueError("must be a mapping such as {'max_norm': 5.0} (torch's clip_grad_norm_ arguments)")
        return args(value)

    return check


def _field_list():
    return list_of(text(), empty=True)


def _columns():
    return Nullable(mapping(text(), _field_list()))


# Keys of RecBole's properties/overall.yaml and dataset YAML (and the package's yaml/overall.yaml),
# with what RecBole's code accepts for each.
RECBOLE_PARAMS = (
    # environment
    Param("gpu_id", gpu_ids()),
    Param("use_gpu", Boolean()),
    Param("worker", Integer(0)),
    Param("seed", Integer(0, 2**32 - 1)),  # init_seed: numpy's seed range
    Param("reproducibility", Boolean()),
    Param("state", Nullable(name(*LOG_LEVELS))),
    Param("data_path", text()),
    Param("checkpoint_dir", folder()),
    Param("show_progress", Boolean()),
    Param("save_dataset", Boolean()),
    Param("dataset_save_path", Nullable(text())),
    Param("save_dataloaders", Boolean()),
    Param("dataloaders_save_path", Nullable(text())),
    Param("log_wandb", Boolean()),
    Param("wandb_project", text()),
    Param("shuffle", Boolean()),
    # training
    Param("epochs", Integer(0)),
    Param("train_batch_size", Integer(1)),
    Param("learner", name(*LEARNERS)),
    Param("learning_rate", Number(0.0)),  # torch's optimizers refuse lr < 0
    Param("train_neg_sample_args", Nullable(keyed(
        NEG_SAMPLE_KEYS, distribution=Nullable(Choice("uniform", "popularity", "none", "None")),
        sample_num=either(Integer(1), Choice("none"), message="must be an integer >= 1"),
        alpha=either(Number(), Choice("none"), message="must be a number"),
        dynamic=Boolean(), candidate_num=Integer(0)))),
    Param("eval_step", Integer(0)),  # 0: never validate (Trainer.fit)
    Param("stopping_step", Integer(0)),
    Param("clip_grad_norm", Nullable(clip_args())),
    Param("weight_decay", Number(0.0)),  # torch's optimizers refuse weight_decay < 0
    Param("loss_decimal_place", Nullable(Integer(0))),
    Param("require_pow", Boolean()),
    Param("enable_amp", Boolean()),
    Param("enable_scaler", Boolean()),
    Param("transform", Nullable(Choice(*TRANSFORMS))),
    # evaluation
    Param("eval_args", eval_args()),
    Param("repeatable", Boolean()),
    Param("metrics", metric_names()),
    Param("topk", cutoffs()),
    Param("valid_metric", text()),
    Param("eval_batch_size", Integer(1)),
    Param("metric_decimal_place", Integer(0)),
    # atomic files and fields
    Param("field_separator", text()),
    Param("seq_separator", text()),
    Param("encoding", Nullable(encoding())),
    Param("USER_ID_FIELD", text()),
    Param("ITEM_ID_FIELD", text()),
    Param("RATING_FIELD", Nullable(text())),
    Param("TIME_FIELD", Nullable(text())),
    Param("LABEL_FIELD", text()),
    Param("NEG_PREFIX", text()),
    Param("seq_len", Nullable(mapping(text(), Integer(1)))),
    Param("threshold", Nullable(mapping(text(), anything))),
    Param("numerical_features", _field_list()),
    Param("load_col", Nullable(mapping(text(), either(_field_list(), Choice("*"),
                                                      message="must be a list of fields or '*'")))),
    Param("unload_col", _columns()),
    Param("unused_col", _columns()),
    Param("additional_feat_suffix", Nullable(either(text(), list_of(text()),
                                                    message="must be a suffix or a list of them"))),
    Param("benchmark_filename", Nullable(list_of(text(), length=3))),  # data_preparation unpacks 3 splits
    # filtering and preprocessing
    Param("rm_dup_inter", Nullable(Choice("first", "last"))),
    Param("val_interval", Nullable(mapping(text(), either(intervals(), list_of(anything),
                                                          message="must be an interval string or a list of tokens")))),
    Param("filter_inter_by_user_or_item", Boolean()),
    Param("user_inter_num_interval", Nullable(intervals())),
    Param("item_inter_num_interval", Nullable(intervals())),
    Param("alias_of_user_id", Nullable(_field_list())),
    Param("alias_of_item_id", Nullable(_field_list())),
    Param("alias_of_entity_id", Nullable(_field_list())),
    Param("alias_of_relation_id", Nullable(_field_list())),
    Param("preload_weight", Nullable(mapping(text(), text()))),
    Param("normalize_field", Nullable(_field_list())),
    Param("normalize_all", Nullable(Boolean())),
    Param("discretization", Nullable(mapping(text(), anything))),
    # sequences
    Param("ITEM_LIST_LENGTH_FIELD", text()),
    Param("LIST_SUFFIX", text()),
    Param("MAX_ITEM_LIST_LENGTH", Integer(1)),
    Param("POSITION_FIELD", text()),
    # knowledge graphs
    Param("HEAD_ENTITY_ID_FIELD", text()),
    Param("TAIL_ENTITY_ID_FIELD", text()),
    Param("RELATION_ID_FIELD", text()),
    Param("ENTITY_ID_FIELD", text()),
    Param("kg_reverse_r", Boolean()),
    Param("entity_kg_num_interval", Nullable(intervals())),
    Param("relation_kg_num_interval", Nullable(intervals())),
    # the package's own (yaml/overall.yaml; train_regime and friends: data.check_regime)
    Param("allow_download", Boolean()),
    Param("run_dir", Nullable(folder())),
    Param("train_length_bucketing", Boolean()),
    Param("precision", Choice(*PRECISIONS)),
    Param("eval_exclude_history", Boolean()),
)


def computed_metrics(metrics, topk):
    """Names of the results RecBole's evaluator returns, e.g. ``ndcg@10``, ``gauc``."""
    names = []
    for metric in [metrics] if isinstance(metrics, str) else metrics:
        needs = metrics_dict[metric.lower()].metric_need
        at_k = "rec.topk" in needs or "rec.items" in needs  # these report one value per k
        names += [f"{metric.lower()}@{k}" for k in topk] if at_k else [metric.lower()]
    return names


def recbole_problems(config, sequential, user_keys=()):
    """Every problem of RecBole's keys in ``config``, one line each (empty when all is well).

    Args:
        config (dict): the merged config, before RecBole's own ``_set_default_parameters`` runs.
        sequential (bool): the model is a RecBole ``SequentialRecommender``.
        user_keys (Iterable[str]): the keys the user set (files, dict, command line).

    Returns:
        list[str]: one line per problem, naming the key and value and what is allowed.
    """
    values, problems = param_problems(config, RECBOLE_PARAMS)
    if "device" in user_keys:  # Config._init_device overwrites it
        problems.append(f"device={config['device']!r} is not read: RecBole picks the device from gpu_id "
                        "(gpu_id='' for CPU, gpu_id=0 for the first GPU)")
    if "eval_args" in values:
        problems += _eval_problems(config, values, sequential)
    if {"metrics", "topk", "valid_metric"} <= set(values):
        computed = computed_metrics(values["metrics"], values["topk"])
        if values["valid_metric"].lower() not in computed:
            problems.append(f"valid_metric={values['valid_metric']!r} is not among the computed metrics "
                            f"({', '.join(computed)}): add its metric to metrics and its k to topk, or pick "
                            "one of these")
    if sequential and values.get("repeatable") is False:
        problems.append("repeatable=False: RecBole's sequential models support only repeatable=True")
    neg = config.get("train_neg_sample_args")
    if sequential and config.get("loss_type") == "CE" and neg is not None and "train_neg_sample_args" in values:
        problems.append(f"train_neg_sample_args={neg!r} should be None when the loss_type is CE "
                        "(the loss ranks all items; write train_neg_sample_args=None or loss_type=BPR)")
    return problems


def _eval_problems(config, values, sequential):
    """Problems of a valid ``eval_args`` for this model type and these metrics."""
    shown = f"eval_args={config['eval_args']!r}"
    args = {**RECBOLE_EVAL_DEFAULTS, **values["eval_args"]}
    problems = []
    if sequential and args["order"] != "TO":
        default = " (RecBole's default when eval_args has no order)" if "order" not in values["eval_args"] else ""
        problems.append(f"{shown}: order {args['order']!r}{default} cannot be used by a sequential model, whose "
                        "training sequences are each user's interactions in time: use 'order': 'TO'")
    if sequential and args["group_by"] != "user":
        problems.append(f"{shown}: group_by {args['group_by']!r} cannot be used by a sequential model, whose "
                        "samples are per-user sequences: use 'group_by': 'user'")
    mode = args["mode"]
    if isinstance(mode, dict):  # a phase left out takes the other's mode, as RecBole fills it
        default = mode.get("valid", mode.get("test", "full"))
        modes = {mode.get("valid", default), mode.get("test", default)}
    else:
        modes = {mode}
    if sequential and config.get("eval_exclude_history") is True and modes != {"full"}:
        problems.append(f"{shown}: eval_exclude_history=True (the protocol's) excludes seen items from the full "
                        "ranking and works with mode 'full' only: use 'full', or eval_exclude_history=False "
                        "for sampled evaluation")
    if "metrics" not in values:
        return problems
    kinds = {metric_types[metric.lower()] for metric in values["metrics"]}
    if len(kinds) > 1:
        problems.append(f"metrics={config['metrics']!r} mixes ranking and value metrics, which RecBole cannot "
                        "evaluate together: keep one kind")
    elif kinds == {EvaluatorType.VALUE} and "full" in modes:
        problems.append(f"{shown}: value metrics ({config['metrics']!r}) score given pairs, which RecBole refuses "
                        "for the full ranking: use mode 'labeled'")
    elif kinds == {EvaluatorType.RANKING} and "labeled" in modes:
        problems.append(f"{shown}: mode 'labeled' scores given pairs and cannot rank for {config['metrics']!r}: "
                        "use 'full', 'uniN' or 'popN'")
    return problems
