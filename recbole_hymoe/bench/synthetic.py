"""Synthetic interaction data shaped like a public data set, for memory and speed benchmarks only.

Users of the package bring data far larger than the paper sets (ML-20M: 138k users, 27k items,
20 M interactions). No such file ships with the package or may be committed, so this helper writes
one with the same shape into a RecBole atomic folder: every user has at least ``min_length``
interactions, user lengths are log-normal with the requested mean, items are drawn with Zipf-like
popularity (exponent ``zipf``), and each user's timestamps are its positions 1, 2, … (as in the
package's ML-1M copy). Its numbers measure cost, never quality.

    python -m recbole_hymoe.bench.synthetic --out <folder> [--shape=ml-20m]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

# users, items, interactions, minimum user length
SHAPES = {
    "ml-20m": (138_493, 26_744, 20_000_263, 20),
    "ml-1m": (6_040, 3_706, 1_000_209, 20),
}


def user_lengths(rng, users, interactions, min_length, sigma=1.0):
    """[users] sequence lengths ≥ ``min_length`` summing exactly to ``interactions`` (log-normal tail)."""
    extra = rng.lognormal(mean=0.0, sigma=sigma, size=users)
    extra = extra / extra.sum() * (interactions - users * min_length)
    lengths = min_length + np.floor(extra).astype(np.int64)
    shortfall = interactions - int(lengths.sum())  # the floors' remainders, one more item each
    lengths[rng.choice(users, size=shortfall, replace=False)] += 1
    return lengths


def write_synthetic(out_dir, name="ml-20m-shaped", shape="ml-20m", zipf=1.0, seed=0):
    """Write ``<out_dir>/<name>/<name>.inter``; return its path and statistics.

    Args:
        out_dir (str or Path): the data folder (RecBole's ``data_path``).
        name (str): the data set name (RecBole's ``dataset``).
        shape (str): a key of :data:`SHAPES`.
        zipf (float): popularity exponent: item of rank r is drawn with probability ∝ r^-zipf.
        seed (int): random seed.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape={shape!r} must be one of {sorted(SHAPES)}")
    users, items, interactions, min_length = SHAPES[shape]
    rng = np.random.default_rng(seed)
    lengths = user_lengths(rng, users, interactions, min_length)
    popularity = np.arange(1, items + 1, dtype=np.float64) ** -zipf
    item_ids = rng.choice(items, size=interactions, p=popularity / popularity.sum()) + 1  # [N], ids 1..items
    user_ids = np.repeat(np.arange(1, users + 1), lengths)  # [N], rows grouped by user
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    timestamps = np.arange(interactions) - starts + 1  # positions within each user: 1, 2, …
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    frame = pd.DataFrame({"user_id:token": user_ids, "item_id:token": item_ids, "timestamp:float": timestamps})
    frame.to_csv(path, sep="\t", index=False)
    return path, {"users": users, "items_drawn_from": items, "interactions": interactions,
                  "distinct_items": int(np.unique(item_ids).size), "mean_length": float(lengths.mean())}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_hymoe.bench.synthetic",
                                     description="Write a synthetic RecBole atomic data set shaped like a public one.")
    parser.add_argument("--out", required=True, help="data folder (data_path)")
    parser.add_argument("--shape", default="ml-20m", choices=sorted(SHAPES))
    parser.add_argument("--name", default=None, help="data set name (default: <shape>-shaped)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path, stats = write_synthetic(args.out, args.name or f"{args.shape}-shaped", args.shape, seed=args.seed)
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
