"""Speed benchmark: training-step time, throughput, evaluation time and peak memory, in one process.

Every variant is built with RecBole's own pipeline (Config -> dataset -> loaders -> model ->
Trainer's optimizer) on the same data. Measurements are interleaved in rounds (variant A, B,
… then again) and summarised by the median, and every figure is also given as a ratio to
RecBole's SASRec (prefix regime) measured in the same run, because absolute seconds drift on a
shared machine.

Measured per variant:

- ``step_s``: one training step (forward, backward, optimizer step) on a batch already in
  memory; ``seq_per_s`` (rows of the batch per second) and ``pos_per_s`` (supervised positions
  per second: one per row in the prefix regime, every real position in the all-positions one);
- ``epoch_s``: median step time × steps per epoch (data loading excluded, measured apart as
  ``load_s_per_epoch``);
- ``eval_s``: one full-sort evaluation of the validation split (RecBole's Trainer.evaluate);
- ``step_gflop`` / ``eval_gflop``: matmul work of the warm-up step (the first training batch,
  forward and backward) and of one evaluation, counted by torch's ``FlopCounterMode`` (matrix
  products and attention; elementwise work is not counted). Their ratios separate what a model
  computes from how fast it computes it: a step-time ratio near the FLOP ratio means the
  extra time is the extra arithmetic, not dispatch overhead;
- ``peak_rss_gb``: how far the process's resident memory rose above its level before the
  variant was built, while its data, model and trainer were built, trained and evaluated
  (sampled every 5 ms).
"""

import gc
import json
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
from recbole.utils import get_model, init_seed
from torch.utils.flop_counter import FlopCounterMode

from recbole_hymoe.compat import clean_argv
from recbole_hymoe.config import Config, check_dataset_files
from recbole_hymoe.data import prepare_data
from recbole_hymoe.trainer import build_trainer
from recbole_hymoe.utils import PeakRSS, slug, write_atomic


@dataclass
class Variant:
    """One model configuration to time."""

    label: str
    model: str
    overrides: dict = field(default_factory=dict)
    config_files: tuple = ()  # read after the run's shared config files


DEFAULT_VARIANTS = (
    Variant("RecBole SASRec (prefix)", "SASRec", {"train_regime": "prefix"}),
    Variant("SASRec-equivalent (prefix)", "HyMoERec", {"moe_num_experts": 0, "train_regime": "prefix"}),
    Variant("SASRec-equivalent (all_positions)", "HyMoERec", {"moe_num_experts": 0, "train_regime": "all_positions"}),
    Variant("HyMoERec (prefix)", "HyMoERec", {"train_regime": "prefix"}),
    Variant("HyMoERec (all_positions)", "HyMoERec", {"train_regime": "all_positions"}),
    # same active FFN width as the dense model's: dense 128 + 2 experts of 64 (vs 256 + 2 x 256)
    Variant("HyMoERec, inner 128 + experts 64 (all_positions)", "HyMoERec",
            {"train_regime": "all_positions", "inner_size": 128, "moe_inner_size": 64}),
)
MAMBA_VARIANTS = (
    Variant("SASRec-equivalent (all_positions)", "HyMoERec", {"moe_num_experts": 0, "train_regime": "all_positions"}),
    Variant("Mamba4Rec (all_positions)", "Mamba4Rec", {"train_regime": "all_positions"}),
    Variant("Mamba4Rec RoPE-BC (all_positions)", "Mamba4Rec", {"train_regime": "all_positions", "rope_target": "bc"}),
    Variant("HyMoERec mamba host (all_positions)", "HyMoERec",
            {"train_regime": "all_positions", "backbone": "mamba", "n_layers": 1, "hidden_dropout_prob": 0.2}),
    Variant("HM2Rec (all_positions)", "HM2Rec", {"train_regime": "all_positions"}),
)
# Every model that trains in the all-positions regime, none in the prefix one: for data sets whose
# prefix augmentation does not fit (ML-1M at L = 200: ≈ 1 M rows × 200 ids before RecBole's split).
ALL_POSITIONS_VARIANTS = (
    Variant("SASRec-equivalent", "HyMoERec", {"moe_num_experts": 0, "train_regime": "all_positions"}),
    Variant("SASRec-equivalent, length-bucketed batches", "HyMoERec",
            {"moe_num_experts": 0, "train_regime": "all_positions", "train_length_bucketing": True}),
    Variant("RecBole SASRec", "SASRec", {"train_regime": "all_positions"}),
    Variant("HyMoERec", "HyMoERec", {"train_regime": "all_positions"}),
    Variant("FuXiAlpha", "FuXiAlpha", {"train_regime": "all_positions"}),
    Variant("Mamba4Rec", "Mamba4Rec", {"train_regime": "all_positions"}),
)
# Each all-positions model in float32 and with its forward pass in bfloat16 (precision: bf16).
PRECISION_VARIANTS = tuple(
    Variant(f"{variant.label} ({precision})", variant.model, {**variant.overrides, "precision": precision})
    for variant in ALL_POSITIONS_VARIANTS if "train_length_bucketing" not in variant.overrides
    for precision in ("fp32", "bf16")
)
VARIANT_SETS = {"default": DEFAULT_VARIANTS, "mamba": MAMBA_VARIANTS, "all_positions": ALL_POSITIONS_VARIANTS,
                "precision": PRECISION_VARIANTS}


def suite_variants(suite):
    """The variants of a benchmark suite's model entries (:class:`~recbole_hymoe.bench.suite.Suite`):
    each entry's label, model, config files (after the suite's protocol) and overrides, in the
    suite's training regime (RecBole's built-ins that cannot train in it keep ``prefix``)."""
    return tuple(
        Variant(entry["label"], entry["model"], {"train_regime": suite.regime_of(entry), **entry["overrides"]},
                tuple(str(f) for f in suite.config_files(entry)))
        for entry in suite.models
    )


def matmul_gflop(fn):
    """Run ``fn()`` and return its matmul work in GFLOP, as torch's ``FlopCounterMode`` counts it."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


class _Prepared:
    """A variant's data, model, trainer and a few training batches held in memory."""

    def __init__(self, variant, dataset, config_file_list, base, n_batches):
        overrides = {**base, **variant.overrides, "show_progress": False, "state": "ERROR"}
        with clean_argv():
            files = [*(config_file_list or []), *variant.config_files]
            self.config = Config(variant.model, dataset, files or None, config_dict=overrides)
        check_dataset_files(self.config)
        init_seed(self.config["seed"], self.config["reproducibility"])
        start = time.perf_counter()
        _, self.train_data, self.valid_data, _ = prepare_data(self.config)
        self.build_s = time.perf_counter() - start
        self.model = get_model(self.config["model"])(self.config, self.train_data._dataset)
        self.model = self.model.to(self.config["device"])
        self.trainer = build_trainer(self.config, self.model)
        self.batch_loss = getattr(self.trainer, "batch_loss", self.model.calculate_loss)
        start = time.perf_counter()
        batches = [batch for batch in self.train_data]  # one full pass: the loading cost of an epoch
        self.load_s_per_epoch = time.perf_counter() - start
        self.steps_per_epoch = len(batches)
        self.rows_per_epoch = sum(len(b) for b in batches)
        self.batches = [b.to(self.config["device"]) for b in batches[:n_batches]]
        self.regime = self.config["train_regime"]
        self.model_name = self.config["model"]

    def positions(self, batch):
        """Supervised positions in ``batch``."""
        if self.regime == "all_positions":
            return int((batch[self.model.ITEM_SEQ] != 0).sum())
        return len(batch)

    def step(self, batch):
        """One optimizer step, as RecBole's Trainer takes it."""
        self.model.train()
        self.trainer.optimizer.zero_grad()
        losses = self.batch_loss(batch)
        loss = sum(losses) if isinstance(losses, tuple) else losses
        loss.backward()
        self.trainer.optimizer.step()

    def evaluate(self):
        start = time.perf_counter()
        self.trainer.evaluate(self.valid_data, load_best_model=False)
        return time.perf_counter() - start


def profile_tables(item, steps, rows=25):
    """torch.profiler operator tables of ``steps`` training steps and one full-sort evaluation.

    Returns:
        dict: ``train`` and ``eval``: text tables, operators sorted by self CPU time, with the
        memory each allocated.
    """
    from torch.profiler import ProfilerActivity, profile

    tables = {}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for batch in item.batches[1 : steps + 1]:
            item.step(batch)
    tables["train"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        item.evaluate()
    tables["eval"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return tables


def run_speed_benchmark(dataset="ml-100k", config_file_list=None, overrides=None, variants=DEFAULT_VARIANTS,
                        steps=5, rounds=3, out_dir=None, threads=None, profile=False):
    """Time every variant on ``dataset``; return (and optionally write) the results.

    Args:
        dataset (str): dataset name.
        config_file_list (list[str], optional): config files shared by all variants.
        overrides (dict, optional): config overrides shared by all variants (a variant's own win).
        variants (Iterable[Variant]): what to time; the first is the reference of the ratios.
        steps (int): timed training steps per variant and round.
        rounds (int): rounds of interleaved measurements.
        out_dir (str or Path, optional): where to write ``speed.json`` and ``speed.md``.
        threads (int, optional): ``torch.set_num_threads`` (default: leave as is).
        profile (bool): after the timings, profile each variant's steps and evaluation with
            torch.profiler and write ``profile-<variant>.txt`` into ``out_dir``.

    Returns:
        dict: ``rows`` (one dict per variant) and ``meta``.
    """
    if threads:
        torch.set_num_threads(threads)
    base = dict(overrides or {})
    results, prepared, peaks = [], [], {}
    for variant in variants:
        gc.collect()
        before = psutil.Process().memory_info().rss
        with PeakRSS() as memory:
            item = _Prepared(variant, dataset, config_file_list, base, n_batches=steps + 1)
            # warm-up (first-call allocations and thread pools), counting its matmul work
            item.step_gflop = matmul_gflop(lambda: item.step(item.batches[0]))
            item.eval_gflop = matmul_gflop(item.evaluate)
        peaks[variant.label] = memory.peak - before
        prepared.append((variant, item))
    step_times = {v.label: [] for v in variants}
    eval_times = {v.label: [] for v in variants}
    for _ in range(rounds):
        for variant, item in prepared:
            for batch in item.batches[1 : steps + 1]:
                start = time.perf_counter()
                item.step(batch)
                step_times[variant.label].append((time.perf_counter() - start, batch))
            eval_times[variant.label].append(item.evaluate())
    for variant, item in prepared:
        timings = step_times[variant.label]
        step_s = statistics.median(t for t, _ in timings)
        rows = statistics.mean(len(b) for _, b in timings)
        positions = statistics.mean(item.positions(b) for _, b in timings)
        results.append({
            "variant": variant.label,
            "model": item.model_name,
            "train_regime": item.regime,
            "overrides": variant.overrides,
            "batch_rows": rows,
            "batch_positions": positions,
            "steps_per_epoch": item.steps_per_epoch,
            "step_s": step_s,
            "seq_per_s": rows / step_s,
            "pos_per_s": positions / step_s,
            "epoch_s": step_s * item.steps_per_epoch,
            "load_s_per_epoch": item.load_s_per_epoch,
            "build_s": item.build_s,
            "eval_s": statistics.median(eval_times[variant.label]),
            "step_gflop": item.step_gflop,
            "eval_gflop": item.eval_gflop,
            "peak_rss_gb": peaks[variant.label] / 2**30,
        })
    reference = results[0]
    for row in results:
        row["step_ratio"] = row["step_s"] / reference["step_s"]
        row["epoch_ratio"] = row["epoch_s"] / reference["epoch_s"]
        row["eval_ratio"] = row["eval_s"] / reference["eval_s"]
        row["step_flop_ratio"] = row["step_gflop"] / reference["step_gflop"]
        row["eval_flop_ratio"] = row["eval_gflop"] / reference["eval_gflop"]
    report = {
        "rows": results,
        "meta": {
            "dataset": dataset,
            "config_files": list(config_file_list or []),
            "overrides": base,
            "steps": steps,
            "rounds": rounds,
            "threads": torch.get_num_threads(),
            "device": str(prepared[0][1].config["device"]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    }
    report["meta"]["process_peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if profile:
            for variant, item in prepared:
                tables = profile_tables(item, steps)
                text = (f"# {variant.label}: {steps} training steps\n\n{tables['train']}\n\n"
                        f"# {variant.label}: one full-sort validation\n\n{tables['eval']}\n")
                write_atomic(out_dir / f"profile-{slug(variant.label)}.txt", text)
        write_atomic(out_dir / "speed.json", json.dumps(report, indent=2, default=str))
        write_atomic(out_dir / "speed.md", speed_table(report))
    return report


def speed_table(report):
    """Markdown table of a :func:`run_speed_benchmark` report, ratios against the first row."""
    meta = report["meta"]
    lines = [
        f"Speed on {meta['dataset']} ({meta['device']}, {meta['threads']} threads, median of "
        f"{meta['steps']} steps × {meta['rounds']} rounds; ratios vs the first row, same run; "
        f"process peak RSS {meta.get('process_peak_rss_gb', float('nan')):.2f} GB)",
        "",
        "| variant | data build s | step s | × | step GFLOP | × | seq/s | pos/s | steps/epoch | epoch s | × | "
        "eval s | × | eval GFLOP | × | RSS rise GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['variant']} | {r.get('build_s', float('nan')):.1f} | {r['step_s']:.3f} | {r['step_ratio']:.2f} | "
            f"{r['step_gflop']:.2f} | "
            f"{r['step_flop_ratio']:.2f} | {r['seq_per_s']:.0f} | {r['pos_per_s']:.0f} | {r['steps_per_epoch']} | "
            f"{r['epoch_s']:.1f} | {r['epoch_ratio']:.3f} | {r['eval_s']:.2f} | {r['eval_ratio']:.2f} | "
            f"{r['eval_gflop']:.2f} | {r['eval_flop_ratio']:.2f} | {r['peak_rss_gb']:.2f} |"
        )
    return "\n".join(lines) + "\n"
