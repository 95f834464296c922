"""Drive a Ray Tune sweep over a plugin or built-in model: checks, Tuner, resume, report.

Everything that can be wrong with the input is checked before Ray starts: the sweep file's
form, keys the model does not read, every grid/choice combination against RecBole's key checks
and the model's own hyperparameter checks, and the dataset files. Ray runs the trials locally (sized to the machine)
or on an existing cluster (``address`` or ``RAY_ADDRESS``); ASHA stops weak trials after each
epoch, a crashed trial is retried up to ``max_failures`` times, and ``resume=True`` continues
an interrupted sweep from its folder without re-running finished trials.
"""

import os
from pathlib import Path

from recbole_hymoe import registry
from recbole_hymoe.compat import clean_argv
from recbole_hymoe.config import PLUGIN_PREFIXES, Config, check_dataset_files, recbole_known_keys
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.models.params import param_problems
from recbole_hymoe.recbole_keys import RECBOLE_PARAMS
from recbole_hymoe.tuning.space import SearchSpace
from recbole_hymoe.tuning.trainable import FIXED_KEY, train_recbole
from recbole_hymoe.utils import init_ray

EXPERIMENT_NAME = "sweep"
TRIALS_DIR = "trials"  # per trial: status.json and the best-validation checkpoint


def _default_overrides(space_overrides, overrides):
    merged = {**space_overrides, **(overrides or {})}
    if "data_path" in merged:  # trials run in Ray's own working folders
        merged["data_path"] = str(Path(merged["data_path"]).resolve())
    return merged


def preflight(space, model, dataset, config_files, overrides):
    """Check the sweep before Ray starts; return the base ``Config``.

    Raises:
        ConfigError: keys the model does not read, or grid/choice combinations that can never
            be valid (all listed), or an invalid base configuration.
        DatasetNotFoundError: the dataset is not on disk.
    """
    with clean_argv():
        config = Config(model, dataset, config_files, overrides)
    check_dataset_files(config)
    plugin = registry.is_plugin_model(config["model"])
    model_keys = {p.key for p in config.model_class.PARAMS} if plugin else set()
    known = recbole_known_keys() | set(config.final_config_dict)
    unread = [key for key in space.space
              if key not in model_keys and (key not in known or (plugin and key.startswith(PLUGIN_PREFIXES)))]
    if unread:
        allowed = f"; keys of {config['model']}: {', '.join(sorted(model_keys))}" if model_keys else ""
        raise ConfigError(f"{space.source}: {config['model']} does not read {', '.join(unread)}{allowed}")
    combos = space.finite_combinations()
    if combos:
        problems = []
        for combo in combos:
            found = param_problems(combo, RECBOLE_PARAMS)[1]
            if plugin:
                found += config.model_class.read_config({**config.final_config_dict, **combo})[1]
            if found:
                problems.append(f"{combo}: {'; '.join(found)}")
        if problems:
            raise ConfigError(f"{space.source}: {len(problems)} of {len(combos)} combinations can never be valid:\n  "
                              + "\n  ".join(problems))
    return config


def _scheduler(space, max_epochs, grace_period, reduction_factor, kind):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    settings = dict(space.scheduler)
    kind = kind or settings.get("type", "asha")
    if kind == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        max_t=max_epochs,
        grace_period=grace_period or settings.get("grace_period", 1),
        reduction_factor=reduction_factor or settings.get("reduction_factor", 2),
    )


def _search_algorithm(search):
    if search == "tpe":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as err:
            raise ConfigError("search 'tpe' needs Optuna: pip install optuna") from err
        return OptunaSearch()
    return None  # Ray's basic variant generator: grid_search entries expanded, the rest sampled


def run_tune(space_file, model=None, dataset=None, config_files=None, overrides=None, out_dir="results/tune",
             scheduler=None, max_epochs=None, grace_period=None, reduction_factor=None, num_samples=None,
             search=None, cpus_per_trial=1, gpus_per_trial=0, max_concurrent=None, max_failures=1,
             address=None, num_cpus=None, resume=False, evaluate_best=True):
    """Run (or resume) a sweep and write its report.

    Args:
        space_file (str): sweep file (see :mod:`recbole_hymoe.tuning.space`).
        model, dataset (str, optional): override the sweep file's.
        config_files (list[str], optional): config files for every trial.
        overrides (dict, optional): config overrides for every trial (above the sweep's ``base``).
        out_dir (str): results folder (Ray's experiment lives in ``<out_dir>/sweep``).
        scheduler (str, optional): ``asha`` or ``fifo`` (default: the sweep file's, else ASHA).
        max_epochs (int, optional): epochs per trial and ASHA's max_t (default: ``epochs``).
        grace_period, reduction_factor (int, optional): ASHA settings.
        num_samples (int, optional), search (str, optional): override the sweep file's.
        cpus_per_trial, gpus_per_trial (float): Ray resources of each trial.
        max_concurrent (int, optional): trials at once (default: as many as fit).
        max_failures (int): retries of a crashed trial.
        address (str, optional): an existing Ray cluster (else ``RAY_ADDRESS``, else local).
        num_cpus (int, optional): CPUs of a local Ray (default: all).
        resume (bool): continue the sweep found in ``out_dir``.
        evaluate_best (bool): test the best-validation trial's best checkpoint at the end.

    Returns:
        dict: the report (see :func:`recbole_hymoe.tuning.report.write_report`).
    """
    from ray import tune

    from recbole_hymoe.tuning.report import write_report

    space = SearchSpace.from_file(space_file)
    model = model or space.model
    dataset = dataset or space.dataset
    if not model or not dataset:
        raise ConfigError("name the model and the dataset (--model/--dataset or the sweep file's model/dataset)")
    merged = _default_overrides(space.base, overrides)
    if max_epochs:
        merged["epochs"] = max_epochs
    base = preflight(space, model, dataset, config_files, merged)
    max_epochs = base["epochs"]
    out_dir = Path(out_dir).resolve()
    experiment = out_dir / EXPERIMENT_NAME
    if resume and not (experiment / "tuner.pkl").exists():
        raise ConfigError(f"nothing to resume in {out_dir}: no sweep was started there")
    if not resume and experiment.exists():
        raise ConfigError(f"{out_dir} already holds a sweep; pass --resume to continue it or choose another --out")

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    init_ray(address, num_cpus)
    trainable = tune.with_resources(train_recbole, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    if resume:
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        fixed = {"model": base["model"], "dataset": base["dataset"], "config_files": list(config_files or []),
                 "overrides": merged, "artifacts_dir": str(out_dir / TRIALS_DIR)}
        tuner = tune.Tuner(
            trainable,
            param_space={**space.ray_space(), FIXED_KEY: fixed},
            tune_config=tune.TuneConfig(
                metric="valid_score",
                mode="max",
                scheduler=_scheduler(space, max_epochs, grace_period, reduction_factor, scheduler),
                search_alg=_search_algorithm(search or space.search),
                num_samples=num_samples or space.num_samples,
                max_concurrent_trials=max_concurrent,
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT_NAME,
                storage_path=str(out_dir),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=1,
            ),
        )
    results = tuner.fit()
    return write_report(results, space, base, config_files, merged, out_dir, out_dir / TRIALS_DIR,
                        evaluate_best=evaluate_best)
