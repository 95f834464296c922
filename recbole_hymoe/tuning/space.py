"""Search spaces for Ray Tune, read from YAML without ``eval``.

A sweep file (``yaml/tune/*.yaml``)::

    model: HyMoERec                 # default model (the command line may override it)
    dataset: ml-100k                # default dataset
    base: {train_regime: all_positions, epochs: 20}   # fixed for every trial
    space:                          # one distribution per key
      moe_warmup_steps: {grid: [0, 100, 500, 1000]}
      learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
      moe_num_experts: {choice: [2, 4, 8]}
      hidden_dropout_prob: {uniform: [0.1, 0.5]}
      n_layers: {randint: [1, 4]}   # low inclusive, high exclusive (Ray's convention)
    seeds: [2020, 2021, 2022]       # optional: every point trained once per seed; the report ranks points
                                    # by the mean over seeds and plots mean ± std
    num_samples: 1                  # samples of the random part (a pure grid needs 1)
    scheduler: {type: asha, grace_period: 2, reduction_factor: 2}
    search: random                  # grid/random (Ray's basic generator) or tpe (Optuna)
    plots:                          # what the report plots; default: best valid score vs each key
      - {file: hr10_vs_warmup.png, x: moe_warmup_steps, metrics: [valid_hit@10]}     # a line (2 metrics: twin axes)
      - {file: ndcg10_e_k.png, x: moe_num_experts, y: moe_top_k, metric: valid_ndcg@10}  # a heatmap over two keys

Each distribution is a one-key mapping; this module checks the form and turns it into Ray's
search objects (imported lazily: parsing needs no Ray).
"""

import itertools
import math
import numbers

import yaml

from recbole_hymoe.errors import ConfigError
from recbole_hymoe.paths import find_file

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
SCHEDULERS = ("asha", "fifo")
SEARCHERS = ("grid", "random", "tpe")
# Best-epoch validation metrics the report keeps per trial, and what a plot may show.
METRIC_COLUMNS = ("valid_hit@10", "valid_ndcg@10", "valid_mrr@10", "valid_hit@5", "valid_ndcg@5")
PLOT_METRICS = ("best_valid_score", *METRIC_COLUMNS, "moe_usage_entropy")
FILE_KEYS = {"model", "dataset", "base", "space", "seeds", "num_samples", "scheduler", "search", "plots"}
SEED_KEY = "seed"


def _check_distribution(key, spec):
    """Return (kind, args) for one space entry, or raise ConfigError naming the key."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"space.{key}: expected one of {{{', '.join(f'{d}: …' for d in DISTRIBUTIONS)}}}, "
                          f"got {spec!r}")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"space.{key}: unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"space.{key}: {kind} needs a non-empty list of values, got {args!r}")
        return kind, list(args)
    if not (isinstance(args, list) and len(args) == 2
            and all(isinstance(a, numbers.Real) and not isinstance(a, bool) for a in args)):
        raise ConfigError(f"space.{key}: {kind} needs [low, high] numbers, got {args!r}")
    low, high = args
    if not low < high:
        raise ConfigError(f"space.{key}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"space.{key}: loguniform needs low > 0, got {low}")
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"space.{key}: randint needs integer bounds, got [{low}, {high}]")
    return kind, [low, high]


class SearchSpace:
    """A parsed sweep file.

    Attributes:
        model, dataset (str or None): defaults named by the file.
        base (dict): fixed config overrides.
        space (dict): key -> (kind, args).
        num_samples (int), scheduler (dict), search (str), source (str).
        plots (list[dict]): the report's plots (``file``, ``x``, ``metrics``; a heatmap: ``file``,
            ``x``, ``y``, ``metric``); by default the best validation score against each key.
    """

    def __init__(self, data, source="<dict>"):
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a sweep file is a mapping with a 'space' entry")
        unknown = set(data) - FILE_KEYS
        if unknown:
            raise ConfigError(f"{source}: unknown entries {sorted(unknown)}; allowed: {', '.join(sorted(FILE_KEYS))}")
        if not isinstance(data.get("space"), dict) or not data["space"]:
            raise ConfigError(f"{source}: 'space' must map config keys to distributions")
        self.source = source
        self.model = data.get("model")
        self.dataset = data.get("dataset")
        self.base = dict(data.get("base") or {})
        self.space = {key: _check_distribution(key, spec) for key, spec in data["space"].items()}
        overlap = set(self.base) & set(self.space)
        if overlap:
            raise ConfigError(f"{source}: keys both fixed in 'base' and searched in 'space': {sorted(overlap)}")
        self.seeds = data.get("seeds")
        if self.seeds is not None and not (
                isinstance(self.seeds, list) and self.seeds and len(set(self.seeds)) == len(self.seeds)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in self.seeds)):
            raise ConfigError(f"{source}: seeds must be a list of distinct integers, got {self.seeds!r}")
        if self.seeds is not None and (SEED_KEY in self.space or SEED_KEY in self.base):
            raise ConfigError(f"{source}: give the seeds in 'seeds', not as '{SEED_KEY}' in 'space' or 'base'")
        if self.seeds is not None and data.get("search") == "tpe":
            raise ConfigError(f"{source}: search 'tpe' cannot repeat a point over seeds; use grid or random")
        self.num_samples = data.get("num_samples", 1)
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ConfigError(f"{source}: num_samples must be an integer >= 1, got {self.num_samples!r}")
        self.scheduler = dict(data.get("scheduler") or {"type": "asha"})
        if self.scheduler.get("type", "asha") not in SCHEDULERS:
            raise ConfigError(f"{source}: scheduler.type {self.scheduler.get('type')!r} is not one of {SCHEDULERS}")
        self.search = data.get("search", "random")
        if self.search not in SEARCHERS:
            raise ConfigError(f"{source}: search {self.search!r} is not one of {SEARCHERS}")
        if self.search == "tpe" and any(kind == "grid" for kind, _ in self.space.values()):
            raise ConfigError(f"{source}: search 'tpe' cannot take grid entries; use choice instead")
        if "plots" in data:
            self.plots = [self._check_plot(i, plot) for i, plot in enumerate(data["plots"] or [])]
        else:
            self.plots = [{"file": f"best_valid_vs_{key}.png", "x": key, "metrics": ["best_valid_score"]}
                          for key in self.space]

    def _check_plot(self, i, plot):
        """Return plot ``i`` in its full form, or raise ConfigError naming what is wrong."""
        where = f"{self.source}: plots[{i}]"
        if not isinstance(plot, dict) or not isinstance(plot.get("file"), str) or not plot["file"].endswith(".png"):
            raise ConfigError(f"{where} needs 'file' (a .png name) and 'x', with 'metrics' (a line) or 'y' and "
                              f"'metric' (a heatmap), got {plot!r}")
        heatmap = "y" in plot
        allowed = {"file", "x", "y", "metric"} if heatmap else {"file", "x", "metrics"}
        if set(plot) != allowed:
            raise ConfigError(f"{where} ({'heatmap' if heatmap else 'line'}) takes exactly {sorted(allowed)}, "
                              f"got {sorted(plot)}")
        for axis in ("x", "y") if heatmap else ("x",):
            if plot[axis] not in self.space:
                raise ConfigError(f"{where}.{axis}: {plot[axis]!r} is not a key of the space ({', '.join(self.space)})")
        metrics = [plot["metric"]] if heatmap else plot["metrics"]
        if not isinstance(metrics, list) or not 1 <= len(metrics) <= 2 or any(m not in PLOT_METRICS for m in metrics):
            raise ConfigError(f"{where}: plot one metric ({'a heatmap' if heatmap else 'or two on twin axes'}) of "
                              f"{', '.join(PLOT_METRICS)}; got {metrics!r}")
        return dict(plot)

    @classmethod
    def from_file(cls, path):
        """Read a sweep file (``yaml/tune/…`` also names the package's own sweeps)."""
        try:
            with open(find_file(path), encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError(f"sweep file not found: {path}") from None
        return cls(data, source=str(path))

    def finite_combinations(self, limit=512):
        """All combinations of the grid/choice entries (None when a continuous entry exists or
        there are more than ``limit``)."""
        if any(kind not in ("grid", "choice") for kind, _ in self.space.values()):
            return None
        keys = list(self.space)
        if math.prod(len(args) for _, args in self.space.values()) > limit:
            return None
        return [dict(zip(keys, values)) for values in itertools.product(*(self.space[k][1] for k in keys))]

    def ray_space(self):
        """The space as Ray Tune search objects (grid -> ``tune.grid_search``)."""
        from ray import tune

        makers = {
            "grid": lambda args: tune.grid_search(args),
            "choice": lambda args: tune.choice(args),
            "uniform": lambda args: tune.uniform(*args),
            "loguniform": lambda args: tune.loguniform(*args),
            "randint": lambda args: tune.randint(int(args[0]), int(args[1])),
        }
        searched = {key: makers[kind](args) for key, (kind, args) in self.space.items()}
        if self.seeds:
            searched[SEED_KEY] = tune.grid_search(list(self.seeds))
        return searched
