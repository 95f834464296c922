"""Benchmark suites: models × datasets × seeds under one protocol, checked before anything runs.

A suite file (``yaml/bench/*.yaml``)::

    name: paper-beauty
    protocol: yaml/protocol/loo-full.yaml     # config file applied to every cell
    datasets: [beauty]
    seeds: [2020, 2021, 2022]
    train_regime: all_positions               # for models that support it; RecBole's others: prefix
    overrides: {stopping_step: 10}            # shared by every cell
    dataset_overrides: {beauty: {MAX_ITEM_LIST_LENGTH: 50}}
    reference: SASRec-equivalent              # relative gains are against this model
    tuning_budget: defaults, no tuning        # said in the tables
    models:
      - {label: SASRec-equivalent, model: HyMoERec, overrides: {moe_num_experts: 0}}
      - {label: SASRec, model: SASRec,        # role defaults to baseline
         config_files: [yaml/dataset/beauty-host.yaml],   # read after the protocol, before overrides
         published: "0.0568 (Li et al. 2023, CE)"}        # the literature's figure, shown beside ours
      - {label: HyMoERec, model: HyMoERec, role: ours,
         host: SASRec-equivalent}             # also compared with this entry (gain, paired p)
      - {label: E8 active 256, model: HyMoERec, role: ours, seeds: [2020, 2021, 2022, 2023],  # own seeds
         family: "MoE, 2 blocks"}             # a line of the report's capacity plot

Seeds an entry adds to the suite's run after every entry's cells at the suite's seeds. Entries with a
``family`` get the report's capacity table and plot (test NDCG@10 against parameters and
against matrix work per step, one line per family); the work and epoch times come from
``run_speed --suite=<file> --out=<the suite's results folder>``.
"""

from pathlib import Path

import yaml

from recbole_hymoe import registry
from recbole_hymoe.compat import clean_argv
from recbole_hymoe.config import Config, check_dataset_files
from recbole_hymoe.data import ALL_POSITIONS_BUILTINS
from recbole_hymoe.errors import ConfigError, DatasetNotFoundError
from recbole_hymoe.paths import find_file
from recbole_hymoe.utils import slug

ROLES = ("ours", "baseline")
ENTRY_KEYS = {"label", "model", "role", "overrides", "config_files", "host", "published", "seeds", "family"}
SUITE_KEYS = {"name", "protocol", "datasets", "seeds", "train_regime", "overrides", "dataset_overrides",
              "reference", "tuning_budget", "models"}


class Suite:
    """A parsed suite; :meth:`cells` lists what to run, :meth:`check` what is wrong with it."""

    def __init__(self, data, source="<dict>"):
        problems = []
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a suite is a mapping (name, datasets, seeds, models, …)")
        unknown = set(data) - SUITE_KEYS
        if unknown:
            problems.append(f"unknown entries {sorted(unknown)}; allowed: {', '.join(sorted(SUITE_KEYS))}")
        for key in ("name", "datasets", "seeds", "models"):
            if not data.get(key):
                problems.append(f"missing {key!r}")
        self.source = source
        self.name = data.get("name", Path(source).stem)
        self.protocol = find_file(data.get("protocol"))
        self.datasets = list(data.get("datasets") or [])
        self.seeds = list(data.get("seeds") or [])
        self.train_regime = data.get("train_regime", "all_positions")
        self.overrides = dict(data.get("overrides") or {})
        self.dataset_overrides = dict(data.get("dataset_overrides") or {})
        self.tuning_budget = data.get("tuning_budget", "defaults, no tuning")
        self.models = []
        for i, entry in enumerate(data.get("models") or []):
            if not isinstance(entry, dict) or "model" not in entry:
                problems.append(f"models[{i}] needs at least 'model'")
                continue
            role = entry.get("role", "baseline")
            if role not in ROLES:
                problems.append(f"models[{i}].role {role!r} is not one of {ROLES}")
            files = [find_file(f) for f in entry.get("config_files") or []]
            problems += [f"models[{i}].config_files: {f} not found" for f in files if not Path(f).is_file()]
            unknown = set(entry) - ENTRY_KEYS
            if unknown:
                problems.append(f"models[{i}]: unknown entries {sorted(unknown)}; "
                                f"allowed: {', '.join(sorted(ENTRY_KEYS))}")
            misplaced = ENTRY_KEYS & set(entry.get("overrides") or {})
            if misplaced:  # e.g. a brace closed one key too late
                problems.append(f"models[{i}].overrides holds {sorted(misplaced)}, which belong to the model entry "
                                "itself, beside 'overrides'")
            # an entry may run more seeds than the suite (e.g. the models a claim rests on)
            seeds = list(entry["seeds"]) if entry.get("seeds") else None
            self.models.append({"label": entry.get("label", entry["model"]), "model": entry["model"],
                                "role": role, "overrides": dict(entry.get("overrides") or {}),
                                "config_files": files, "host": entry.get("host"),
                                "published": entry.get("published"), "seeds": seeds,
                                "family": entry.get("family")})
        labels = [m["label"] for m in self.models]
        if len(labels) != len(set(labels)):
            problems.append("model labels must be unique")
        problems += [f"{m['label']}: host {m['host']!r} is not one of the model labels"
                     for m in self.models if m["host"] is not None and m["host"] not in labels]
        self.reference = data.get("reference", labels[0] if labels else None)
        if labels and self.reference not in labels:
            problems.append(f"reference {self.reference!r} is not one of the model labels {labels}")
        for owner, seeds in [("seeds", self.seeds), *((f"{m['label']}: seeds", m["seeds"]) for m in self.models)]:
            if seeds is not None and not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
                problems.append(f"{owner} must be integers, got {seeds}")
        if problems:
            raise ConfigError(f"{source}: " + "; ".join(problems))

    @classmethod
    def from_file(cls, path):
        """Read a suite file (``yaml/bench/…`` also names the package's own suites)."""
        try:
            with open(find_file(path), encoding="utf-8") as f:
                return cls(yaml.safe_load(f), source=str(path))
        except FileNotFoundError:
            raise ConfigError(f"suite file not found: {path}") from None

    def regime_of(self, entry):
        """The suite's training regime, or ``prefix`` for a RecBole model that cannot train in
        ``all_positions`` (it trains on the last position only)."""
        name = registry.resolve_model_name(entry["model"])
        if (self.train_regime == "all_positions"
                and not (registry.is_plugin_model(name) or name in ALL_POSITIONS_BUILTINS)):
            return "prefix"
        return self.train_regime

    def cell_overrides(self, entry, dataset, extra=None):
        """Config overrides of one (model, dataset) cell."""
        return {"train_regime": self.regime_of(entry), **self.overrides, **self.dataset_overrides.get(dataset, {}),
                **entry["overrides"], **(extra or {})}

    def seeds_of(self, entry):
        """The seeds of one model entry: its own ``seeds`` when it names them, else the suite's."""
        return entry["seeds"] or self.seeds

    def config_files(self, entry):
        """The protocol, then the entry's own config files (e.g. a dataset's shared host settings)."""
        return ([self.protocol] if self.protocol else []) + entry["config_files"]

    def cells(self, out_dir, extra=None):
        """Every cell spec (model × dataset × seed), each with its own folder under ``out_dir``.

        In run order: per dataset, every model's cells at the suite's seeds first, then the extra
        seeds some entries name, so a suite stopped part-way has whole rows rather than a few
        models with many seeds.
        """
        runs = [(entry, seed) for entry in self.models for seed in self.seeds_of(entry) if seed in self.seeds]
        runs += [(entry, seed) for entry in self.models for seed in self.seeds_of(entry) if seed not in self.seeds]
        specs = []
        for dataset in self.datasets:
            for entry, seed in runs:
                specs.append({
                    "label": entry["label"], "model": entry["model"], "role": entry["role"],
                    "dataset": dataset, "seed": seed,
                    "config_files": [str(f) for f in self.config_files(entry)],
                    "overrides": self.cell_overrides(entry, dataset, extra),
                    "dir": str(Path(out_dir).resolve() / "cells" / slug(dataset) / slug(entry["label"])
                               / f"seed-{seed}"),
                })
        return specs

    def check(self, extra=None):
        """Build every (model, dataset) config and check the data; raise listing every problem.

        Raises:
            ConfigError: unknown models or datasets, rejected cell configs, a missing protocol file.
        """
        problems = []
        if self.protocol and not Path(self.protocol).is_file():
            problems.append(f"protocol file not found: {self.protocol}")
        for dataset in self.datasets:
            for entry in self.models:
                try:
                    with clean_argv():
                        config = Config(entry["model"], dataset, self.config_files(entry) or None,
                                        self.cell_overrides(entry, dataset, extra))
                    check_dataset_files(config)
                except (ConfigError, DatasetNotFoundError) as err:
                    problems.append(f"{entry['label']} on {dataset}: " + " ".join(str(err).split()))
        if problems:
            raise ConfigError(f"{self.source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
