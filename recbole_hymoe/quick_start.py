"""Train and evaluate a plugin or built-in model with RecBole's own pipeline; save a run folder.

``run`` mirrors ``recbole.quick_start.run`` (RecBole's cannot see plugin model names through
its Config) and adds what a comparison needs: the dataset checked before loading, one folder
per run holding the checkpoint, the exact resolved config, the results table (markdown and
JSON) and, for MoE models, the per-epoch expert telemetry.
"""

import json
import logging
import math
import platform
import sys
import time
from datetime import datetime
from importlib.metadata import version
from logging import getLogger
from pathlib import Path
from typing import NamedTuple

import torch
import yaml
from recbole.utils import get_model, init_logger, init_seed

from recbole_hymoe.atomic import check_split
from recbole_hymoe.config import Config, check_dataset_files
from recbole_hymoe.data import exclude_history, prepare_data
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.paths import portable
from recbole_hymoe.resume import DERIVED_KEYS, load_training_state, restore_training_state, save_training_state
from recbole_hymoe.trainer import build_trainer
from recbole_hymoe.utils import write_atomic

# Columns of the results table, in the protocol's order; every metric stays in results.json.
TABLE_METRICS = ("hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr@10", "hit@50", "ndcg@50")


def run(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    cmd_args=None,
    saved=True,
    nproc=1,
    world_size=-1,
    ip="localhost",
    port="5678",
    group_offset=0,
):
    """Train ``model`` on ``dataset``, evaluate the best-validation checkpoint on test.

    Args:
        model (str): plugin or built-in model name (case-insensitive).
        dataset (str): dataset name (``ml-100k`` ships with RecBole).
        config_file_list (list[str], optional): YAML files.
        config_dict (dict, optional): overrides above the files.
        cmd_args (dict, optional): command-line overrides, above everything.
        saved (bool): keep the best checkpoint and test it (else test the last weights).
        nproc, world_size, ip, port, group_offset: RecBole's multi-GPU arguments.

    Returns:
        dict: ``best_valid_score``, ``best_valid_result``, ``test_result``, ``run_dir``,
        ``checkpoint`` and timing fields (also written to ``<run_dir>/results.json``).

    Raises:
        UnknownModelError, ConfigError, DatasetNotFoundError: before any data is loaded.
    """
    config = Config(model, dataset, config_file_list, config_dict, cmd_args)
    check_dataset_files(config)
    if nproc > 1 or world_size > 0:
        return _run_distributed(model, dataset, config_file_list, config_dict, cmd_args, saved,
                                nproc, world_size, ip, port, group_offset)
    return train_and_evaluate(config, saved=saved)


class Pipeline(NamedTuple):
    """What :func:`build_pipeline` returns: data, model and trainer ready for ``fit``."""

    dataset: object
    train_data: object
    valid_data: object
    test_data: object
    model: object
    trainer: object
    history: list  # filled with one record per validation (see :func:`record_validation`)


def build_pipeline(config):
    """Seed, log, load the data and build the model and trainer, as RecBole's ``run_recbole`` does.

    Shared by :func:`train_and_evaluate`, benchmark cells and Ray Tune trials.
    """
    init_seed(config["seed"], config["reproducibility"])
    reset_root_logger()
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    dataset, train_data, valid_data, test_data = prepare_data(config)
    check_split(config, dataset, valid_data, test_data)
    logger.info(dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model)
    trainer = build_trainer(config, model)
    return Pipeline(dataset, train_data, valid_data, test_data, model, trainer, record_validation(trainer))


class Fitted(NamedTuple):
    """What :func:`fit_resumable` returns."""

    best_valid_score: float
    best_valid_result: dict
    train_time_s: float  # training seconds over every segment of the run
    resumed_at: list  # epochs at which later segments continued the run
    history: list  # every validation record, ``elapsed_s`` in training seconds


def fit_resumable(config, pipeline, run_dir, state, saved=True):
    """``trainer.fit`` that continues a saved run and saves its state after every validation.

    Args:
        config (Config): the run's config.
        pipeline (Pipeline): from :func:`build_pipeline` (its trainer checkpoints into ``run_dir``).
        run_dir (Path): the run folder.
        state (dict, optional): :func:`recbole_hymoe.resume.load_training_state`'s answer, read
            before the data was built.
        saved (bool): keep the best checkpoint and the training state.

    Returns:
        Fitted: scores, training time and the full validation history.
    """
    trainer, train_data, history = pipeline.trainer, pipeline.train_data, pipeline.history
    settings = reusable_config(config)
    logger = getLogger()
    previous, offset, resumed_at, finished = [], 0.0, [], False
    if state is not None:
        restore_training_state(state, trainer, train_data, config["device"])
        previous, offset = state["history"], state["train_time_s"]
        finished = state["stopped"] or trainer.start_epoch >= trainer.epochs
        resumed_at = state["resumed_at"] + ([] if finished else [trainer.start_epoch])
        if not finished:
            logger.info(f"continuing the run in {run_dir} after epoch {state['epoch']}")
    start = time.perf_counter()

    def training_seconds(clock):
        return round(offset + clock - start, 3)

    def save_state(epoch_idx, valid_score):
        history[-1]["elapsed_s"] = training_seconds(history[-1]["elapsed_s"])
        if saved and config["local_rank"] == 0:
            save_training_state(run_dir, trainer, train_data, previous + history,
                                getattr(trainer, "moe_history", []), training_seconds(time.perf_counter()),
                                settings, resumed_at)

    if finished:
        logger.info(f"the run in {run_dir} has finished training (epoch {state['epoch']}); testing it")
        best_valid_score, best_valid_result = trainer.best_valid_score, trainer.best_valid_result
    else:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, pipeline.valid_data, saved=saved,
            show_progress=config["show_progress"], callback_fn=save_state,
        )
    return Fitted(float(best_valid_score), dict(best_valid_result or {}), training_seconds(time.perf_counter()),
                  resumed_at, previous + history)


def train_and_evaluate(config, saved=True):
    """Run RecBole's data -> model -> Trainer.fit -> evaluate pipeline for a built ``Config``.

    A run folder that holds an unfinished run's training state (:mod:`recbole_hymoe.resume`)
    continues it after its last validated epoch — e.g. after an interruption, or with a
    larger ``epochs`` — and the state is saved again after every validation.
    """
    run_dir = _prepare_run_dir(config)
    state = load_training_state(run_dir, reusable_config(config)) if saved else None  # before any data is read
    pipeline = build_pipeline(config)
    trainer, model = pipeline.trainer, pipeline.model
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: data that cannot be read leaves no folder behind
    logger = getLogger()
    n_params = sum(p.numel() for p in model.parameters())
    fitted = fit_resumable(config, pipeline, run_dir, state, saved)
    best_valid_score, best_valid_result, train_time, resumed_at, history = fitted
    start = time.perf_counter()
    test_result = trainer.evaluate(pipeline.test_data, load_best_model=saved, show_progress=config["show_progress"])
    test_time = time.perf_counter() - start

    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "train_regime": config["train_regime"],
        "precision": config["precision"],
        "best_valid_score": float(best_valid_score),
        "valid_metric": config["valid_metric"],
        "best_epoch": (best_record(history, config["valid_metric_bigger"]) or {}).get("epoch"),
        "epochs_run": len(trainer.train_loss_dict),
        "best_valid_result": dict(best_valid_result or {}),
        "test_result": dict(test_result or {}),
        "valid_history": history,
        "train_time_s": train_time,
        "resumed_at_epochs": resumed_at,
        "test_time_s": round(test_time, 3),
        "n_params": n_params,
        "run_dir": str(run_dir),
        "checkpoint": trainer.saved_model_file if saved else None,
        "versions": versions(),
        "command": sys.argv if sys.argv and sys.argv[0] else [],
    }
    if getattr(trainer, "moe_history", None):
        result["moe_telemetry"] = trainer.moe_history
    if config["local_rank"] == 0:
        _write_run_folder(run_dir, config, result)
        logger.info("results:\n" + results_table(result))
        logger.info(f"run folder: {run_dir}")
    return result


def load_data_and_model(model_file):
    """RecBole's ``load_data_and_model`` with the protocol's evaluation (``eval_exclude_history``).

    Returns:
        tuple: config, model, dataset, train, valid and test loaders, as RecBole's.
    """
    from recbole.quick_start import load_data_and_model as recbole_load

    config, model, dataset, train_data, valid_data, test_data = recbole_load(model_file)
    valid_data, test_data = exclude_history(config, train_data, valid_data, test_data)
    return config, model, dataset, train_data, valid_data, test_data


def results_table(result):
    """Return the markdown results table (best-validation epoch's valid and test metrics)."""
    valid, test = result["best_valid_result"], result["test_result"]
    metrics = [m for m in TABLE_METRICS if m in valid or m in test]
    header = "| split | " + " | ".join(metrics) + " |"
    rule = "|---|" + "---|" * len(metrics)
    rows = [
        f"| {name} | " + " | ".join(f"{values[m]:.4f}" if m in values else "–" for m in metrics) + " |"
        for name, values in (("valid", valid), ("test", test))
    ]
    title = (
        f"{result['model']} on {result['dataset']} (seed {result['seed']}): best valid "
        f"{result['valid_metric']} at epoch {result['best_epoch']} of {result['epochs_run']}, "
        f"train {result['train_time_s']:.1f} s"
    )
    return "\n".join([title, "", header, rule, *rows]) + "\n"


def best_record(history, bigger=True):
    """The validation record RecBole kept as best, or None for an empty history.

    RecBole's ``early_stopping`` moves the best forward on ties (``>=``), so of equal scores
    (they are rounded to the metric's decimals) the last is the one whose checkpoint was saved
    and tested; a NaN score never becomes the best.

    Args:
        history (list[dict]): per-validation records with ``valid_score``, in training order.
        bigger (bool): ``valid_metric_bigger``.
    """
    best = None
    for record in history:
        score = record["valid_score"]
        if math.isnan(score):
            continue
        if best is None or (score >= best["valid_score"] if bigger else score <= best["valid_score"]):
            best = record
    return best


def record_validation(trainer):
    """Make ``trainer`` append each validation's epoch, score, metrics, loss terms and clock to a list.

    RecBole's ``fit`` reports only the score to its callback and keeps only the summed training
    loss; learning curves need every metric, and diagnosing a multi-term loss (HM2Rec's VGAE
    terms, the MoE auxiliary loss) needs each term.

    Returns:
        list[dict]: filled during ``fit``; ``train_loss_terms`` holds each term of the model's loss
        summed over the batches of the epoch just trained (as RecBole logs them), ``elapsed_s`` is
        ``time.perf_counter()`` at the end of each validation.
    """
    history = []
    validate, train_epoch = trainer._valid_epoch, trainer._train_epoch
    last_terms = []

    def _train_epoch(*args, **kwargs):
        loss = train_epoch(*args, **kwargs)
        last_terms[:] = [float(term) for term in (loss if isinstance(loss, tuple) else (loss,))]
        return loss

    def _valid_epoch(valid_data, show_progress=False):
        score, result = validate(valid_data, show_progress=show_progress)
        history.append({"epoch": max(trainer.train_loss_dict),  # the epoch just trained
                        "valid_score": float(score), "valid_result": dict(result),
                        "train_loss_terms": list(last_terms), "elapsed_s": time.perf_counter()})
        return score, result

    trainer._train_epoch, trainer._valid_epoch = _train_epoch, _valid_epoch
    return history


def _prepare_run_dir(config):
    """Choose this run's folder (no name collisions) and make it the checkpoint directory.

    The folder is created once the data is loaded and the model built.
    """
    if config["run_dir"]:
        run_dir = Path(config["run_dir"])
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = Path(config["checkpoint_dir"]) / f"{config['model']}-{config['dataset']}-{stamp}"
    run_dir = run_dir.resolve()
    config["checkpoint_dir"] = str(run_dir)
    config["run_dir"] = str(run_dir)
    return run_dir


def reset_root_logger():
    """Drop handlers left by an earlier run in this process (RecBole's init_logger adds, never replaces)."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()


def versions():
    """Versions of the packages a result depends on."""
    names = ("recbole-hymoe", "recbole", "torch", "numpy", "pandas")
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except Exception:  # noqa: BLE001 - an uninstalled distribution is just not recorded
            continue
    found["python"] = platform.python_version()
    return found


def reusable_config(config):
    """Return the resolved config as plain data that ``--config_files`` accepts back."""
    out = {}
    for key, value in config.final_config_dict.items():
        if key in DERIVED_KEYS:
            continue
        if key == "data_path":
            value = str(Path(value).parent)
        if key == "train_neg_sample_args" and isinstance(value, dict) and value.get("distribution") == "none":
            value = None
        out[key] = _plain(value)
    return out


def _plain(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _write_run_folder(run_dir, config, result):
    """Write the run's config, results and table. ``results.json`` names the run folder and the
    checkpoint as :func:`~recbole_hymoe.paths.portable` does; ``config.yaml`` stays reusable with
    ``--config_files``, so its ``data_path`` is relative only when it lies under the working folder."""
    settings = reusable_config(config)
    data_path = Path(settings["data_path"]).resolve()
    if data_path.is_relative_to(Path.cwd().resolve()):
        settings["data_path"] = str(data_path.relative_to(Path.cwd().resolve()))
    record = {**result, "run_dir": portable(result["run_dir"]),
              "checkpoint": portable(result["checkpoint"]) if result["checkpoint"] else None,
              "command": [Path(arg).name if i == 0 else arg for i, arg in enumerate(result["command"])]}
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(settings, sort_keys=True))
    write_atomic(run_dir / "results.json", json.dumps(record, indent=2, default=str))
    write_atomic(run_dir / "results.md", results_table(result))


def _run_distributed(model, dataset, config_file_list, config_dict, cmd_args, saved,
                     nproc, world_size, ip, port, group_offset):
    """RecBole's multi-process (DDP, NCCL) path, with workers that import this plugin."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < nproc:
        raise ConfigError(
            f"nproc={nproc} needs {nproc} CUDA GPUs (RecBole's distributed training uses NCCL); "
            f"found {torch.cuda.device_count() if torch.cuda.is_available() else 0}. Use nproc=1 on CPU."
        )
    import torch.multiprocessing as mp

    world_size = nproc if world_size == -1 else world_size
    queue = mp.get_context("spawn").SimpleQueue()
    shared = dict(config_dict or {})
    shared.update({"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset})
    if not shared.get("run_dir"):  # one folder for all ranks
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        shared["run_dir"] = str(Path("saved") / f"{model}-{dataset}-{stamp}")
    mp.spawn(
        _distributed_worker,
        args=(model, dataset, config_file_list, shared, cmd_args, saved, queue),
        nprocs=nproc,
        join=True,
    )
    return None if queue.empty() else queue.get()


def _distributed_worker(rank, model, dataset, config_file_list, config_dict, cmd_args, saved, queue):
    config = Config(model, dataset, config_file_list, {**config_dict, "local_rank": rank}, cmd_args)
    result = train_and_evaluate(config, saved=saved)
    if config["local_rank"] == 0:
        queue.put(result)
    torch.distributed.destroy_process_group()
