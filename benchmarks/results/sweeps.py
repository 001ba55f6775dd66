"""Hyperparameter sweeps on Ray Tune: every point of a grid is one transfer run, the best chosen by a named metric.

Each trial is ``tools/transfer.py`` in its own process and its own output directory (``OUTPUT/trial_<i>``); with
``--db`` it writes its own row in the results store. The sweep writes ``OUTPUT/sweep.json`` and ``sweep.md``: every
trial's parameters, status and metric, and the best trial. Selection is on val where the task reports val metrics
(linear: the chosen head's val scores in its sweep.json; finetune: finetune.json's), and otherwise on the task's one
evaluation split, which sweep.md names.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from converters.io import atomic_write_text

from ..tasks import get_task, run_config
from .store import ResultsStore, default_db_path
from .transfer_runs import (
    absolute,
    finite,
    main_metrics,
    parse_resources,
    ray_session,
    resolve_metric,
    run_transfer,
    selection_split,
    transfer_command,
    trial_environment,
)

SEED_KEY = "SEED"  # a grid key that is the run's --seed, not a config override
_DETECTION_OR_SEGMENTATION = ("coco_maskrcnn", "voc_fasterrcnn", "bdd_fasterrcnn", "coco_maskrcnn_fpn",
                              "coco_fasterrcnn_fpn", "cityscapes_deeplabv3")


def split_values(text: str) -> list[str]:
    """``"0.01,0.02"`` -> ``["0.01", "0.02"]``; commas inside brackets or quotes stay (``"(0.3,),(3.0,)"``)."""
    values, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["SOLVER.BASE_LR=0.01,0.02", "SEED=1,2"]`` -> ``{"SOLVER.BASE_LR": ["0.01", "0.02"], "SEED": ["1", "2"]}``."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ValueError(f"--grid {item!r}: give KEY=v1,v2,... (e.g. SOLVER.BASE_LR=0.01,0.02 or SEED=1,2,3)")
        if key in grid:
            raise ValueError(f"--grid {key} is given twice: give all its values in one --grid {key}=v1,v2")
        parsed = split_values(values)
        if any(not value for value in parsed) or len(set(parsed)) < len(parsed):
            raise ValueError(f"--grid {item!r}: values must be non-empty and distinct")
        if key == SEED_KEY and not all(value.isdigit() for value in parsed):
            raise ValueError(f"--grid {item!r}: seeds are integers >= 0")
        grid[key] = parsed
    return grid


@dataclass(frozen=True)
class Preset:
    """A named grid for some tasks, built from the task's resolved recipe, with where its values come from."""

    source: str
    tasks: tuple
    grid: Callable  # the run's resolved config -> {KEY: [values]}


def _newell_deng_grid(cfg) -> dict[str, list[str]]:
    if cfg.TASK == "linear":
        return {"PROBE.LRS": [f"({lr},)" for lr in cfg.PROBE.LRS], "PROBE.WEIGHT_DECAYS": ["(0.0,)", "(1e-5,)",
                                                                                         "(1e-4,)"]}
    lr, decay = cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY
    return {"SOLVER.BASE_LR": [repr(lr * factor) for factor in (0.5, 1.0, 2.0)],
            "SOLVER.WEIGHT_DECAY": [repr(decay * factor) for factor in (0.1, 1.0, 10.0)]}


PRESETS = {
    "hpt_finetune": Preset(
        source="HPT (Reed et al., 'Self-Supervised Pretraining Improves Self-Supervised Pretraining') appendix A, "
               "Table 4 (finetune column): lr {0.01, 0.001} x schedule {2500 steps, 90 epochs}, their version of "
               "the 'lightweight sweep' of Zhai et al. 2019 (VTAB); chosen on val, reported on test",
        tasks=("finetune",),
        grid=lambda cfg: {"FINETUNE.LRS": ["(0.01,)", "(0.001,)"],
                          "FINETUNE.SCHEDULES": ["('2500steps',)", "('90epochs',)"]}),
    "linear_lr": Preset(
        source="HPT appendix A, Table 4 (linear column): lr {0.3, 3, 30}, one trial per lr (the linear task's own "
               "in-process sweep, spread over Ray); chosen on val, reported on test",
        tasks=("linear",),
        grid=lambda cfg: {"PROBE.LRS": ["(0.3,)", "(3.0,)", "(30.0,)"]}),
    "newell_deng": Preset(
        source="Newell & Deng, 'How Useful is Self-Supervised Pretraining for Visual Tasks?', supplement section 1: "
               "Ray Tune over the learning rate and the weight decay. The supplement names what was tuned, not the "
               "values (those are in their released code), so these values are transferlab's: the recipe's lr x "
               "{0.5, 1, 2} and weight decay x {0.1, 1, 10} (linear: each recipe lr x weight decay {0, 1e-5, 1e-4})",
        tasks=("linear", *_DETECTION_OR_SEGMENTATION),
        grid=_newell_deng_grid),
}


def sweep_grid(task: str, preset: str | None, grid_items: Sequence[str], base_cfg) -> dict[str, list[str]]:
    """The preset's grid (for ``base_cfg``, the task's recipe) updated with the ``--grid`` keys, in that order."""
    grid = {}
    if preset is not None:
        if preset not in PRESETS:
            raise KeyError(f"--preset {preset!r}: one of {', '.join(PRESETS)}")
        if task not in PRESETS[preset].tasks:
            raise ValueError(f"--preset {preset} is for task(s) {', '.join(PRESETS[preset].tasks)}, not {task}")
        grid = PRESETS[preset].grid(base_cfg)
    grid.update(parse_grid(grid_items))
    if not grid:
        raise ValueError("nothing to sweep: give --grid KEY=v1,v2 (repeatable) and/or --preset NAME")
    return grid


def grid_trials(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination, the last key varying fastest."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _trial_run(params: dict[str, str], overrides: Sequence[str]) -> tuple[int | None, list[str]]:
    """A trial's --seed and its KEY VALUE overrides (the sweep's own after the common ones)."""
    seed = int(params[SEED_KEY]) if SEED_KEY in params else None
    return seed, [*overrides, *itertools.chain.from_iterable((k, v) for k, v in params.items() if k != SEED_KEY)]


def run_sweep(task: str, weights: str, output, grid_items: Sequence[str] = (), preset: str | None = None,
              metric: str | None = None, mode: str = "max", resources: str | None = None, address: str | None = None,
              db=None, data_root=None, config_file=None, overrides: Sequence[str] = ()) -> dict:
    """Run the sweep and write sweep.json / sweep.md into ``output``; the sweep's record (see module doc)."""
    get_task(task)
    weights, data_root, config_file = absolute(weights), absolute(data_root), absolute(config_file)
    if weights != "none" and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights}: no such file")
    if mode not in ("max", "min"):
        raise ValueError(f"--mode {mode!r}: max or min")
    output = Path(output).resolve()
    if output.is_dir() and (any(output.glob("trial_*")) or (output / "sweep.json").exists()):
        raise FileExistsError(f"--output {output} holds an earlier sweep (trial_*/ or sweep.json): choose another")
    share = parse_resources(resources)
    base_cfg, _, _ = run_config(task, output / "trial_000", weights, config_file, data_root, overrides)
    grid = sweep_grid(task, preset, grid_items, base_cfg)
    trials = []
    for index, params in enumerate(grid_trials(grid)):
        seed, trial_overrides = _trial_run(params, overrides)
        trial_dir = output / f"trial_{index:03d}"
        cfg, _, _ = run_config(task, trial_dir, weights, config_file, data_root, trial_overrides, seed)  # checks keys
        trials.append({"trial": index, "params": params, "output_dir": str(trial_dir), "seed": cfg.SEED,
                       "overrides": trial_overrides})
    metric = metric or main_metrics(base_cfg)[0]
    db_path = default_db_path(db).resolve()
    commands = [transfer_command(task, weights, Path(t["output_dir"]), seed=t["seed"], db=db_path,
                                 data_root=data_root, config_file=config_file, num_gpus=int(share["gpu"]),
                                 overrides=t["overrides"]) for t in trials]
    print(f"Sweep of {task} ({weights}): {len(trials)} trials over {', '.join(grid)}, each with {share['cpu']:g} CPU "
          f"and {share['gpu']:g} GPU, into {output}/trial_<i>")
    results = _tune(task, commands, trials, share, address, output)
    record = _summarize(task, weights, metric, mode, preset, grid, trials, results, base_cfg)
    store = ResultsStore(db_path)
    for trial in record["trials"]:
        rows = store.query(status=None, output_dir=trial["output_dir"])
        trial["run_id"] = rows[-1].run_id if rows else None
        trial["store_status"] = rows[-1].status if rows else None
    record["db"] = str(db_path)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "sweep.json", json.dumps(record, indent=2, allow_nan=True) + "\n")
    atomic_write_text(output / "sweep.md", sweep_table(record))
    return record


def _tune(task: str, commands: list, trials: list, share: dict, address: str | None, output: Path) -> dict:
    """Every trial on Ray Tune (one grid point each); trial index -> run_transfer's result."""
    env, cwd = trial_environment(), os.getcwd()
    with ray_session(address):
        from ray import tune

        def trainable(config):
            index = config["trial"]
            result = run_transfer(commands[index], task, trials[index]["output_dir"], share["cpu"], env, cwd)
            tune.report({"result": json.dumps(result, allow_nan=True), "returncode": result["returncode"]})

        specs = trials

        class Progress(tune.Callback):
            """One line per trial as it ends, in the driver (the workers' output stays in the trial directories)."""

            def on_trial_result(self, iteration, trials, trial, result, **info):
                index, code = trial.config["trial"], result["returncode"]
                print(f"trial {index} {specs[index]['params']}: " + ("finished" if code == 0 else
                      f"failed (exit {code}; see {specs[index]['output_dir']}/transfer_output.txt)"), flush=True)

        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": share["cpu"], "gpu": share["gpu"]}),
            param_space={"trial": tune.grid_search(list(range(len(trials))))},
            tune_config=tune.TuneConfig(trial_dirname_creator=lambda trial: f"trial_{trial.config['trial']:03d}"),
            run_config=tune.RunConfig(name="ray_tune", storage_path=str(output), verbose=0, callbacks=[Progress()]))
        results = {}
        for result in tuner.fit():
            index = result.config["trial"]
            if result.error is not None:  # Ray could not run the trainable at all
                results[index] = {"returncode": None, "metrics": {}, "val_metrics": None, "wall_time": None,
                                  "error": f"Ray: {result.error}"}
            else:
                results[index] = json.loads(result.metrics["result"])
        return results


def _summarize(task, weights, metric, mode, preset, grid, trials, results, base_cfg) -> dict:
    """The sweep's record: each trial with its selection value, and the best trial (the first of equals)."""
    uses_val = any(results[t["trial"]]["val_metrics"] for t in trials)
    available = sorted({name for t in trials for name in (results[t["trial"]]["val_metrics"] if uses_val else
                                                          results[t["trial"]]["metrics"]) or {}})
    resolved = resolve_metric(metric, available) if available else metric
    rows = []
    for trial in trials:
        result = results[trial["trial"]]
        scores = (result["val_metrics"] if uses_val else result["metrics"]) or {}
        value = scores.get(resolved, math.nan)
        rows.append({**{k: trial[k] for k in ("trial", "params", "seed", "output_dir")},
                     "status": "finished" if result["returncode"] == 0 and not result["error"] else "failed",
                     "value": value, "metrics": result["metrics"], "val_metrics": result["val_metrics"],
                     "wall_time": result["wall_time"], "error": result["error"]})
    scored = [row for row in rows if row["status"] == "finished" and finite(row["value"])]
    sign = 1 if mode == "max" else -1
    best = max(scored, key=lambda row: sign * row["value"])["trial"] if scored else None  # max keeps the first tie
    return {"task": task, "weights": weights, "metric": resolved, "mode": mode,
            "selected_on": "val" if uses_val else selection_split(base_cfg), "preset": preset,
            "preset_source": PRESETS[preset].source if preset else None, "grid": grid, "trials": rows, "best": best}


def sweep_table(record: dict) -> str:
    """sweep.md: what was swept and how it was chosen, one row per trial, the best marked."""
    lines = [f"# Sweep: {record['task']} ({record['weights']})", "",
             f"Selection: {record['mode']} {record['metric']} on {record['selected_on']}."]
    if record["preset"]:
        lines.append(f"Preset {record['preset']}: {record['preset_source']}.")
    on_val = record["selected_on"] == "val"  # then the test value is the one a paper reports
    metric = record["metric"]
    lines += ["", "| trial | " + " | ".join(record["grid"]) + f" | status | {'val ' if on_val else ''}{metric} | "
              + (f"test {metric} | " if on_val else "") + "output |", "|---" * (len(record["grid"]) + 4 + on_val) + "|"]

    def number(value):
        return f"{value:.2f}" if finite(value) else "-"

    for row in record["trials"]:
        mark = " (best)" if row["trial"] == record["best"] else ""
        test = f"{number(row['metrics'].get(metric))} | " if on_val else ""
        lines.append(f"| {row['trial']}{mark} | " + " | ".join(row["params"][key] for key in record["grid"])
                     + f" | {row['status']} | {number(row['value'])} | {test}{row['output_dir']} |")
    best = next((row for row in record["trials"] if row["trial"] == record["best"]), None)
    if best is None:
        lines += ["", "Best: none (no trial finished with the metric)."]
    else:
        test = f" (test {number(best['metrics'].get(metric))})" if on_val else ""
        lines += ["", f"Best: trial {best['trial']} ({', '.join(f'{k}={v}' for k, v in best['params'].items())}), "
                      f"{'val ' if on_val else ''}{metric} {best['value']:.2f}{test}."]
    return "\n".join(lines) + "\n"
