"""One benchmark cell: a model trained and tested on a dataset with a seed, everything recorded.

A cell runs RecBole's pipeline (as :func:`recbole_hymoe.quick_start.train_and_evaluate` does)
and records, in its folder: the best-validation checkpoint's test metrics, per-user test metrics
(for paired statistics), the validation history, epochs, train time per epoch and in total,
evaluation time, parameter count, peak resident memory and, for MoE models, the per-epoch
expert telemetry and the expert usage on validation tokens by item-popularity tier.

Cells run in a fresh process each (``python -m recbole_hymoe.bench.cell <spec.json>`` or a
Ray task with ``max_calls=1``), so memory figures and crashes stay per cell. A cell cut short
(killed, or its machine gone) continues from the training state its ``run/`` folder kept at its
last validation (:mod:`recbole_hymoe.resume`) when the suite runs again; its result records the
epochs at which it continued (``resumed_at_epochs``), and its wall time and peak memory are
those of the last segment.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from recbole.evaluator.metrics import MRR, NDCG, Hit

import recbole_hymoe  # noqa: F401  (repairs RecBole, registers the models)
from recbole_hymoe import registry
from recbole_hymoe.compat import clean_argv
from recbole_hymoe.config import Config
from recbole_hymoe.nn.moe import SparseMoE
from recbole_hymoe.paths import portable
from recbole_hymoe.quick_start import best_record, build_pipeline, fit_resumable, reusable_config, versions
from recbole_hymoe.resume import load_training_state
from recbole_hymoe.utils import PeakRSS, write_atomic

RESULT_FILE = "result.json"
PER_USER_FILE = "per_user.npz"
RUN_FOLDER = "run"  # checkpoints and the training state an interrupted cell continues from (not committed)
# Item-popularity tiers by training frequency: the most frequent 20 % of items, the next 30 %,
# the remaining 50 %.
POPULARITY_TIERS = (("head", 0.2), ("torso", 0.5), ("tail", 1.0))


def evaluate_per_user(trainer, test_data):
    """Test the best checkpoint; return RecBole's metrics and per-user metrics in test order.

    RecBole's evaluator only returns means; its collector's top-k matrix is captured on the way
    and turned into per-user Hit/NDCG/MRR with RecBole's own metric functions.
    """
    captured = {}
    evaluate = trainer.evaluator.evaluate

    def capture(struct):
        captured["topk"] = struct.get("rec.topk").clone()
        return evaluate(struct)

    trainer.evaluator.evaluate = capture
    try:
        result = trainer.evaluate(test_data, load_best_model=True)
    finally:
        trainer.evaluator.evaluate = evaluate
    topk = captured["topk"].numpy()
    pos_index, pos_len = topk[:, :-1].astype(bool), topk[:, -1]
    dataset = test_data._dataset  # sequential full-sort evaluation: one row per user, in row order
    per_user = {"user": dataset.inter_feat[dataset.uid_field].numpy()}
    hit = Hit.metric_info(None, pos_index)
    ndcg = NDCG.metric_info(None, pos_index, pos_len)
    mrr = MRR.metric_info(None, pos_index)
    for k in trainer.config["topk"]:
        per_user[f"hit@{k}"] = hit[:, k - 1].astype(np.float64)
        per_user[f"ndcg@{k}"] = ndcg[:, k - 1]
        per_user[f"mrr@{k}"] = mrr[:, k - 1]
    return dict(result), per_user


def popularity_tiers(dataset, n_items):
    """Tier index (0 = head … 2 = tail) of every item id by training frequency, [n_items].

    Sequential datasets of the package count their training interactions; others (a general
    model's data) count every interaction of ``dataset``.
    """
    source = getattr(dataset, "train_interactions", None)
    items = np.asarray(source[1]) if source is not None else dataset.inter_feat[dataset.iid_field].numpy()
    counts = np.bincount(items, minlength=n_items)
    order = np.argsort(-counts[1:], kind="stable") + 1  # item 0 is padding
    tiers = np.full(n_items, -1, dtype=np.int64)
    start = 0
    for tier, (_, upto) in enumerate(POPULARITY_TIERS):
        stop = int(round(upto * len(order)))
        tiers[order[start:stop]] = tier
        start = stop
    return tiers


@torch.no_grad()
def expert_usage_by_tier(model, data, tiers):
    """Token-slots each expert receives on ``data``'s sequences, per item-popularity tier.

    Returns:
        dict: MoE layer name -> [[count per expert] per tier] (items of real tokens, every layer
        computed at every position).
    """
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, SparseMoE)]
    if not layers:
        return {}
    counts = {name: np.zeros((len(POPULARITY_TIERS), module.num_experts), dtype=np.int64) for name, module in layers}
    current = {}
    hooks = [
        module.register_forward_hook(lambda mod, args, out, name=name: current.__setitem__(name, out.router.topk_idx))
        for name, module in layers
    ]
    model.eval()
    try:
        for batch in data:
            interaction = batch[0] if isinstance(batch, tuple) else batch
            item_seq, item_seq_len, inputs = model.encoder_inputs(interaction.to(model.device))
            model.encode(item_seq, item_seq_len, **inputs)
            token_tiers = tiers[item_seq[item_seq != 0].cpu().numpy()]
            for name, topk_idx in current.items():
                repeats = topk_idx.shape[0] // max(1, len(token_tiers))  # streams folded into the batch
                row_tiers = np.tile(token_tiers, repeats)
                for k in range(topk_idx.shape[1]):
                    np.add.at(counts[name], (row_tiers, topk_idx[:, k].cpu().numpy()), 1)
            current.clear()
    finally:
        for hook in hooks:
            hook.remove()
    return {name: value.tolist() for name, value in counts.items()}


def run_cell(spec):
    """Train and test one cell; write ``result.json`` and ``per_user.npz`` in ``spec['dir']``.

    Args:
        spec (dict): ``model``, ``dataset``, ``seed``, ``config_files``, ``overrides``, ``dir``,
            ``label``.

    Returns:
        dict: the cell's result (also written).
    """
    cell_dir = Path(spec["dir"])
    cell_dir.mkdir(parents=True, exist_ok=True)
    run_dir = cell_dir / RUN_FOLDER
    with PeakRSS() as memory:
        start = time.perf_counter()
        overrides = {**spec["overrides"], "seed": spec["seed"], "run_dir": str(run_dir),
                     "checkpoint_dir": str(run_dir), "show_progress": False}
        if "data_path" in overrides:  # recorded as the user gave it, resolved from where the suite ran
            overrides["data_path"] = str(Path(spec.get("cwd", ".")) / overrides["data_path"])
        with clean_argv():
            files = [str(Path(spec.get("cwd", ".")) / f) for f in spec.get("config_files") or []]
            config = Config(spec["model"], spec["dataset"], files, overrides)
        state = load_training_state(run_dir, reusable_config(config))  # an interrupted cell continues
        pipeline = build_pipeline(config)
        run_dir.mkdir(exist_ok=True)
        fitted = fit_resumable(config, pipeline, run_dir, state)
        eval_start = time.perf_counter()
        test_result, per_user = evaluate_per_user(pipeline.trainer, pipeline.test_data)
        test_s = time.perf_counter() - eval_start
        model, trainer = pipeline.model, pipeline.trainer
        epochs = len(trainer.train_loss_dict)
        tiers = popularity_tiers(pipeline.dataset, model.n_items)
        usage = expert_usage_by_tier(model, pipeline.valid_data, tiers)
        wall_s = time.perf_counter() - start
    history = fitted.history
    best = best_record(history, config["valid_metric_bigger"])
    result = {
        "label": spec["label"],
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "train_regime": config["train_regime"],
        "test_result": test_result,
        "best_valid_result": best["valid_result"] if best else {},
        "best_epoch": best["epoch"] if best else None,
        "epochs_run": epochs,
        "valid_history": history,
        "train_s": round(fitted.train_time_s, 2),
        "train_s_per_epoch": round(fitted.train_time_s / max(1, epochs), 2),
        "resumed_at_epochs": fitted.resumed_at,
        "test_eval_s": round(test_s, 2),
        "wall_s": round(wall_s, 1),
        "n_params": sum(p.numel() for p in model.parameters()),
        "peak_rss_gb": round(memory.peak / 2**30, 3),
        "moe_telemetry": getattr(trainer, "moe_history", []),
        "expert_usage_by_tier": usage,
        "tiers": [name for name, _ in POPULARITY_TIERS],
        "overrides": spec["overrides"],
        "model_settings": model_settings(config),
        "config_files": [portable(path) for path in spec.get("config_files") or []],
        "versions": versions(),
    }
    np.savez_compressed(cell_dir / PER_USER_FILE, **per_user)
    write_atomic(cell_dir / RESULT_FILE, json.dumps(result, indent=2, default=str))
    return result


def model_settings(config):
    """The values ``config`` resolves for every key its model's defaults file sets (ours or RecBole's).

    A cell records them so that a later change of a model default (not only of a suite's overrides)
    shows up as a difference against the settings a suite would now give the cell. A key the
    config lacks is left out, not recorded as null: a run that started before the key was added to
    the defaults file (and finished after) trained without it, and a key added later is not
    compared (:func:`~recbole_hymoe.bench.runner.check_recorded_cells`).

    Returns:
        dict: key -> value, as JSON would store it.
    """
    path = Path(registry.model_yaml(config["model"]))
    keys = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
    return json.loads(json.dumps({key: config[key] for key in sorted(keys) if key in config}, default=str))


def main(argv=None):
    """Run the cell described by the JSON file given as the only argument."""
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    run_cell(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
