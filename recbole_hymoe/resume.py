"""Resumable training: the state a run folder keeps after every validation, and its restoration.

RecBole's ``Trainer`` saves only the best-validation checkpoint (weights and optimizer, not the
data order, the random streams or the learning curve), so a run stopped half-way — a closed
laptop, a killed job, an epoch cap raised later — cannot continue where it was. After every
validation :func:`save_training_state` writes ``<run_dir>/training_state.pth`` (through a
temporary file, so an interruption leaves the previous state intact); :func:`restore_training_state`
puts it back into a freshly built pipeline, and the continued run trains exactly the epochs
an uninterrupted run would have trained (same weights, optimizer moments, shuffles, dropout
masks and negatives on CPU).
"""

import os
import random
from pathlib import Path

import numpy as np
import torch

from recbole_hymoe.errors import ConfigError
from recbole_hymoe.utils import atomic_path

STATE_FILE = "training_state.pth"
# Keys of a resolved config that RecBole computes, not the user: left out of a run's reusable
# settings (``config.yaml``, which ``--config_files`` takes back, and the training state) and of the
# check that a continued run keeps its settings.
# RecBole's BERT4Rec transform (``MaskItemSequence``) writes the last four while the data is built.
DERIVED_KEYS = frozenset({
    "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device", "single_spec", "local_rank",
    "valid_neg_sample_args", "test_neg_sample_args", "valid_metric_bigger", "config_files",
    "checkpoint_dir", "run_dir", "MASK_INDEX", "MASK_ITEM_SEQ", "POS_ITEMS", "NEG_ITEMS",
})
# Settings a continued run may change: they do not alter what the finished epochs computed.
RESUMABLE_CHANGES = frozenset({
    "epochs", "show_progress", "data_path", "checkpoint_dir", "run_dir", "gpu_id", "use_gpu", "worker",
    "eval_batch_size", "state", "log_wandb", "nproc", "world_size", "offset", "ip", "port",
})


def state_file(run_dir):
    """Path of a run folder's training state."""
    return Path(run_dir) / STATE_FILE


def save_training_state(run_dir, trainer, train_data, history, moe_history, train_time_s, settings, resumed_at):
    """Write everything a continued run needs, atomically.

    Args:
        run_dir (Path): the run folder.
        trainer: RecBole trainer after a validation (its best score, patience and best file).
        train_data: the training loader (its shuffling generator).
        history (list[dict]): validation records so far, ``elapsed_s`` in training seconds.
        moe_history (list[dict]): expert telemetry records so far.
        train_time_s (float): training seconds so far, over all segments.
        settings (dict): the run's reusable config (checked when the run continues).
        resumed_at (list[int]): epochs at which earlier segments continued the run.
    """
    epoch = max(trainer.train_loss_dict)
    state = {
        "epoch": epoch,
        "stopped": trainer.cur_step > trainer.stopping_step,
        "cur_step": trainer.cur_step,
        "best_valid_score": float(trainer.best_valid_score),
        "best_valid_result": dict(trainer.best_valid_result or {}),
        "best_checkpoint": Path(trainer.saved_model_file).name,
        "train_loss_dict": dict(trainer.train_loss_dict),
        "state_dict": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "history": history,
        "moe_history": moe_history,
        "train_time_s": train_time_s,
        "settings": settings,
        "resumed_at": resumed_at,
        "rng": _rng_states(train_data),
    }
    with atomic_path(state_file(run_dir)) as tmp:
        torch.save(state, tmp)


def load_training_state(run_dir, settings):
    """Read a run folder's training state, or None; refuse one saved under other settings.

    Raises:
        ConfigError: the folder's run used different settings (names them; a continued run
            may change only ``RESUMABLE_CHANGES``).
    """
    path = state_file(run_dir)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = state["settings"]
    changed = sorted(
        key for key in set(saved) | set(settings)
        if key not in RESUMABLE_CHANGES and key not in DERIVED_KEYS and saved.get(key) != settings.get(key)
    )
    if changed:
        details = "; ".join(f"{key}: {saved.get(key)!r} -> {settings.get(key)!r}" for key in changed)
        raise ConfigError(
            f"run folder {run_dir} holds a run with other settings ({details}); continue it with its "
            f"own settings (only {', '.join(sorted(RESUMABLE_CHANGES))} may change) or choose another run_dir"
        )
    return state


def restore_training_state(state, trainer, train_data, device):
    """Put a saved state back into a freshly built trainer and loader; continue after its epoch."""
    trainer.model.load_state_dict(state["state_dict"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.start_epoch = state["epoch"] + 1
    trainer.cur_step = state["cur_step"]
    trainer.best_valid_score = state["best_valid_score"]
    trainer.best_valid_result = state["best_valid_result"]
    trainer.train_loss_dict = dict(state["train_loss_dict"])
    trainer.saved_model_file = os.path.join(trainer.checkpoint_dir, state["best_checkpoint"])
    if hasattr(trainer, "moe_history"):
        trainer.moe_history = list(state["moe_history"])
    _set_rng_states(state["rng"], train_data, device)


def _rng_states(train_data):
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "loader": train_data.generator.get_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states, train_data, device):
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    train_data.generator.set_state(states["loader"])
    if "cuda" in states and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state_all(states["cuda"])
