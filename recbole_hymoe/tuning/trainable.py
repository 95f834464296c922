"""The Ray Tune trainable: one RecBole training run per trial, reported every epoch.

It lives in a package module so Ray workers import ``recbole_hymoe`` (RecBole repairs and model
registry) before anything runs. Each trial builds the package's ``Config`` (it never reads the
worker's ``sys.argv``), writes its checkpoints under its own trial folder, reports the
validation metrics after every epoch together with a checkpoint of the whole trainer (model,
optimizer, epoch, early-stopping state), and resumes from that checkpoint when Ray restarts it.
Test data is never looked at here: selection is on validation only.
"""

import json
import os
import tempfile
from pathlib import Path

import torch

import recbole_hymoe  # noqa: F401  (repairs RecBole and registers the models in the worker)
from recbole_hymoe.config import Config
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.quick_start import build_pipeline

FIXED_KEY = "recbole_hymoe"  # param_space entry holding what every trial shares
SKIPPED_SCORE = -1.0  # reported by a trial whose sampled combination is invalid
STATUS_FILE = "status.json"
TRAINER_FILE = "trainer.pth"
HISTORY_FILE = "history.json"


def _assigned(resource, default):
    import ray

    try:
        return ray.get_runtime_context().get_assigned_resources().get(resource, default)
    except Exception:  # noqa: BLE001 - outside a Ray worker (direct calls in tests)
        return default


def _write_status(trial_dir, **status):
    (trial_dir / STATUS_FILE).write_text(json.dumps(status, indent=2, default=str), encoding="utf-8")


def train_recbole(trial_config):
    """Ray Tune function trainable (see the module docstring)."""
    from ray import tune

    fixed = trial_config[FIXED_KEY]
    params = {k: v for k, v in trial_config.items() if k != FIXED_KEY}
    # Our own folder per trial under the sweep's output (Ray's working folders are temporary).
    trial_dir = Path(fixed["artifacts_dir"]) / tune.get_context().get_trial_id()
    trial_dir.mkdir(parents=True, exist_ok=True)
    overrides = {
        **fixed["overrides"],
        **params,
        "checkpoint_dir": str(trial_dir / "best"),
        "run_dir": str(trial_dir / "best"),
        "show_progress": False,
        # Ray sets CUDA_VISIBLE_DEVICES to this trial's GPUs; Config keeps it (RecBole would not).
        "use_gpu": bool(_assigned("GPU", 0)),
    }
    try:
        config = Config(fixed["model"], fixed["dataset"], fixed["config_files"], overrides)
    except ConfigError as err:  # e.g. moe_top_k > moe_num_experts drawn at random
        _write_status(trial_dir, reason="skipped", detail=str(err), params=params)
        tune.report({"valid_score": SKIPPED_SCORE, "epoch": -1, "skipped": 1})
        return
    torch.set_num_threads(max(1, int(_assigned("CPU", 1))))
    os.makedirs(config["checkpoint_dir"], exist_ok=True)
    _, train_data, valid_data, _, _, trainer, history = build_pipeline(config)
    best_model_file = trainer.saved_model_file
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.resume_checkpoint(Path(folder) / TRAINER_FILE)
            history.extend(json.loads((Path(folder) / HISTORY_FILE).read_text(encoding="utf-8")))
            best_model_file = json.loads((Path(folder) / STATUS_FILE).read_text(encoding="utf-8"))["best_model"]
        trainer.saved_model_file = best_model_file  # resume_checkpoint points it at the temporary copy
    # Until the trial ends by itself this says "running": a scheduler may stop it at any report.
    _write_status(trial_dir, reason="running", best_model=best_model_file, params=params)

    def report(epoch, valid_score):
        record = history[-1]
        metrics = {"valid_score": float(valid_score), "epoch": epoch,
                   "best_valid_score": float(trainer.best_valid_score),
                   **{f"valid_{name}": value for name, value in record["valid_result"].items()}}
        layers = trainer.moe_history[-1]["layers"].values() if getattr(trainer, "moe_history", None) else ()
        if layers:
            metrics["moe_usage_entropy"] = sum(s["usage_entropy"] for s in layers) / len(layers)
        _write_status(trial_dir, reason="running", epochs_done=epoch + 1, best_model=best_model_file, params=params)
        with tempfile.TemporaryDirectory() as folder:
            trainer._save_checkpoint(epoch, verbose=False, saved_model_file=str(Path(folder) / TRAINER_FILE))
            (Path(folder) / HISTORY_FILE).write_text(json.dumps(history, default=str), encoding="utf-8")
            _write_status(Path(folder), best_model=best_model_file)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=report)
    epochs = max(trainer.train_loss_dict) + 1 if trainer.train_loss_dict else 0
    reason = "completed max epochs" if epochs >= config["epochs"] else "early stopping (stopping_step)"
    _write_status(trial_dir, reason=reason, epochs=epochs, best_model=best_model_file, params=params)
