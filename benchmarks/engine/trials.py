"""Several seeds of one run as one result: HPT reports the median over seeds, MoCo the mean ± std."""
from __future__ import annotations

import math
import statistics


def summarize_trials(metrics_by_seed: dict) -> dict:
    """The trials' metrics dicts (the same nesting in each) with every number replaced by ``{"median", "mean",
    "std", "values"}`` over the seeds, in seed order; ``std`` is the sample standard deviation (n - 1)."""
    seeds = sorted(metrics_by_seed)
    if len(seeds) < 2:
        raise ValueError(f"a summary needs at least 2 trials, got {len(seeds)}")

    def combine(values: list, where: str):
        if all(isinstance(v, dict) for v in values):
            keys = list(values[0])
            if any(list(v) != keys for v in values[1:]):
                raise ValueError(f"trials report different metrics under {where or 'the top level'}")
            return {key: combine([v[key] for v in values], f"{where}/{key}".lstrip("/")) for key in keys}
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"trials' metric {where} is not a number in every trial: {values}")
        finite = [float(v) for v in values if math.isfinite(v)]
        nan = float("nan")
        return {"median": statistics.median(finite) if finite else nan,
                "mean": statistics.fmean(finite) if finite else nan,
                "std": statistics.stdev(finite) if len(finite) > 1 else nan,
                "values": [float(v) for v in values]}

    return combine([metrics_by_seed[seed] for seed in seeds], "")


def trials_table(summary: dict, seeds) -> str:
    """Markdown: one row per metric with the median, mean ± std and each seed's value."""
    rows = []

    def walk(node: dict, path: list):
        if "values" in node and "median" in node:
            rows.append(("/".join(path), node))
            return
        for key, child in node.items():
            walk(child, [*path, key])

    walk(summary, [])
    seeds = list(seeds)
    lines = [f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); median (HPT) and mean ± sample std (MoCo).", "",
             "| metric | median | mean ± std | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---" * (3 + len(seeds)) + "|"]
    for name, stats in rows:
        lines.append(f"| {name} | {stats['median']:.2f} | {stats['mean']:.2f} ± {stats['std']:.2f} | "
                     + " | ".join(f"{v:.2f}" for v in stats["values"]) + " |")
    return "\n".join(lines) + "\n"
