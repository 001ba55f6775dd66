#!/usr/bin/env python
"""Choose the source dataset for hierarchical pretraining: HPT's task-aware source selection.

Each candidate source gets a short HPT stage on top of the base checkpoint (MoCo v2 continued from --init on the
source's images); each stage's checkpoint, and the base itself as a reference, is then scored by the linear probe
on the target's labelled splits (trained on train, scored on val); the source whose checkpoint scores highest wins,
and its checkpoint is what the target stage starts from (Reed et al. 2022, "Self-Supervised Pretraining Improves
Self-Supervised Pretraining", §3 "Source pretraining"; §4.3 "Sequential pretraining transferability": "the source
dataset that yielded the highest linear evaluation accuracy on the target dataset after 5k pretraining steps on top
of the base model").

Example, the built-in domains (generated on first use) and the demo checkpoint of `make demo`:
  python tools/select_source.py --init work/demo/pretrain/last.pth --sources domain_a,domain_b --target domain_b
  python tools/pretrain.py --config configs/pretrain/hpt_demo.yaml --init work/select/domain_b/<winner>/last.pth \\
      --output work/pretrain/hpt_target DATA.BUILTIN domain_b   # the target stage, from the winner's checkpoint
On real data, the paper's recipe (5k steps of 256 images per source):
  python tools/select_source.py --init moco_v2_800ep.pth --config configs/pretrain/hpt_r50.yaml \\
      --sources /data/clipart/train,/data/painting/train --target /data/sketch --output work/select/sketch

A source is a directory of images (flat or in class subfolders), or domain_a / domain_b: the built-in domain's
train/ split. The target is a labelled dataset root with train/ and val/ (and test/; a missing test split is drawn
from train) in <split>/<class>/<image> folders or train.csv / val.csv multi-label tables, or domain_a / domain_b.
The score is the val top-1 (AUROC for a multi-label target) of the probe's chosen head: the head is fitted on
train and chosen on val, as appendix A selects every setting; test is reported for reference only. Equal scores
rank in the order --sources gives them.
"""
import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and tools/pretrain.py would shadow the `pretrain`
# package; the repository root goes there instead.
_TOOLS = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _TOOLS]
sys.path.insert(0, str(_TOOLS.parent))

from fvcore.common.config import CfgNode  # noqa: E402

from benchmarks.classification.config import validate_classification_config  # noqa: E402
from benchmarks.classification.features import checkpoint_id  # noqa: E402
from benchmarks.data.builtin import DOMAINS, builtin_data_root  # noqa: E402
from benchmarks.engine.cli import input_directory, output_directory, run_tool  # noqa: E402
from benchmarks.engine.config import ConfigError, load_config  # noqa: E402
from benchmarks.engine.distributed import init_distributed  # noqa: E402
from benchmarks.engine.lock import lock_output_dir  # noqa: E402
from benchmarks.engine.logging import setup_logger  # noqa: E402
from benchmarks.results.records import RecordedRun, run_record  # noqa: E402
from benchmarks.results.store import default_db_path  # noqa: E402
from benchmarks.tasks import get_task, load_task_config  # noqa: E402
from converters import load_backbone  # noqa: E402
from converters.io import atomic_write_text  # noqa: E402
from pretrain.config import get_defaults  # noqa: E402
from pretrain.train import changed_keys, check_config, train  # noqa: E402

TOOL = "select_source.py"
REPO = _TOOLS.parent
DEFAULT_CONFIG = REPO / "configs" / "pretrain" / "hpt_demo.yaml"
# §3: "a very short amount of pretraining, e.g. 5k pretraining steps"; §4.3 selects "after 5k pretraining steps".
PAPER_STEPS = 5000
BASE_NAME = "base"  # DIR/base/probe: the reference row, the base checkpoint without a source stage
STAGE_RECORD = "stage.json"  # DIR/<source>/stage.json: written once the stage's last.pth is final
SCORE_RECORD = "score.json"  # DIR/<name>/probe/score.json: written once the probe has scored that checkpoint
# Keys the tool sets itself, one per candidate or from its options.
OWN_KEYS = {"MODEL.INIT": "--init", "DATA.ROOT": "--sources", "OUTPUT_DIR": "--output",
            "SOLVER.MAX_ITER": "--steps"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=TOOL, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="--output receives one directory per source (the stage: config.yaml, log.txt, last.pth, stage.json; "
               "probe/: the probe's metrics.json, sweep.json, results.md, score.json), base/probe/ (the reference), "
               "log.txt, selection.json (everything to reproduce the choice) and selection.md (the table). Run it "
               "again with the same --output after an interruption: finished stages and probes are reused, a "
               "stage that was cut short resumes from its last checkpoint.")
    parser.add_argument("--init", required=True, help="base checkpoint, any format tools/convert.py reads "
                                                      "(sets MODEL.INIT of every stage)")
    parser.add_argument("--sources", required=True,
                        help="comma-separated candidate sources, at least 2: image directories, or domain_a / "
                             "domain_b (the built-in domain's train/ split)")
    parser.add_argument("--target", required=True,
                        help="labelled target dataset root with train/ and val/ splits, or domain_a / domain_b")
    parser.add_argument("--output", help="output directory (default: work/select/<target name>)")
    parser.add_argument("--db", help="results store each probe's row goes to (default: $TRANSFERLAB_DB, else "
                        "work/results.db)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="pretraining recipe of the stages (default: configs/pretrain/hpt_demo.yaml, HPT's "
                             "recipe at demo size; configs/pretrain/hpt_r50.yaml is the paper's); METHOD is hpt")
    parser.add_argument("--steps", type=int,
                        help="HPT steps per source (SOLVER.MAX_ITER; default: the config's, "
                             f"else the paper's {PAPER_STEPS})")
    parser.add_argument("--probe-config", help="linear-probe config (default: the one tools/transfer.py --task "
                                               "linear picks for the target: the demo recipe for the built-in "
                                               "domains and generated sets, else the paper's)")
    parser.add_argument("--probe-opt", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="a linear-probe config override, e.g. --probe-opt PROBE.STEPS 100 (repeatable)")
    parser.add_argument("overrides", nargs="*", metavar="KEY VALUE",
                        help="pretraining config overrides, e.g. SOLVER.IMS_PER_BATCH 16 MODEL.MOCO.QUEUE_SIZE 256")
    return parser.parse_intermixed_args(argv)


# --- the candidates -----------------------------------------------------------------------------------------------


def builtin_name(name: str) -> bool:
    """``domain_a`` / ``domain_b`` as written, naming a built-in domain (a local directory of that name: ./domain_a)."""
    return name in DOMAINS


def resolve_sources(text: str) -> list[tuple[str, Path]]:
    """(name, directory) of each source, in the order given; a name is the directory's, made unique."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if len(entries) < 2:
        raise ValueError(f"--sources {text!r}: give at least 2 candidate sources, comma-separated (selection "
                         "compares them)")
    paths = []
    for entry in entries:
        path = builtin_data_root() / entry / "train" if builtin_name(entry) else Path(entry)
        paths.append(input_directory(path, "--sources").resolve())
    repeated = sorted({str(path) for path in paths if paths.count(path) > 1})
    if repeated:
        raise ValueError(f"--sources names {repeated[0]} more than once")
    names = []
    for entry, path in zip(entries, paths):
        names.append(entry if builtin_name(entry) else path.name)
    # Same-named directories (/data/x/train, /data/y/train) take their parents' names until unique.
    depth = 1
    while len(set(names)) < len(names) or BASE_NAME in names:
        depth += 1
        names = [entry if builtin_name(entry) else "-".join(path.parts[-depth:]).lstrip("/-") or path.name
                 for entry, path in zip(entries, paths)]
        if depth > max(len(path.parts) for path in paths):
            raise ValueError(f"--sources: cannot name the sources {entries} apart")
    return list(zip(names, paths))


def resolve_target(text: str) -> tuple[Path, str | None]:
    """The target's directory and, for a built-in domain, its name; checks the labelled splits the score needs."""
    if builtin_name(text):
        return builtin_data_root() / text, text
    root = input_directory(text, "--target").resolve()
    for split in ("train", "val"):
        if not ((root / split).is_dir() or (root / f"{split}.csv").is_file()):
            role = "fits the linear probe" if split == "train" else "scores each candidate"
            raise FileNotFoundError(f"--target {root} has no {split} split ({root}/{split}/<class>/<image> or "
                                    f"{root}/{split}.csv): the labelled {split} split {role}")
    return root, None


# --- the configs --------------------------------------------------------------------------------------------------


def check_overrides(overrides: list[str]) -> None:
    keys = overrides[0::2]
    for key, option in OWN_KEYS.items():
        if key in keys:
            raise ConfigError(f"{key} is set by {TOOL} (one per source); give it with {option}")
    values = dict(zip(keys, overrides[1::2]))
    if values.get("METHOD", "hpt") != "hpt":
        raise ConfigError(f"METHOD {values['METHOD']}: source selection runs HPT stages (METHOD hpt)")


def pretrain_config(args, base: Path, base_arch: str, steps: int, source: Path, output: Path) -> CfgNode:
    overrides = ["METHOD", "hpt", *args.overrides, "MODEL.INIT", str(base), "DATA.ROOT", str(source),
                 "OUTPUT_DIR", str(output), "SOLVER.MAX_ITER", str(steps)]
    if "MODEL.ARCH" not in args.overrides[0::2]:
        overrides = ["MODEL.ARCH", base_arch, *overrides]  # the base's arch, unless told otherwise
    cfg = load_config(get_defaults(), args.config, overrides)
    if cfg.MODEL.ARCH != base_arch:
        raise ConfigError(f"MODEL.ARCH {cfg.MODEL.ARCH}: --init {base} holds a {base_arch}, which every stage "
                          "continues; drop the override")
    check_config(cfg, world_size=1)
    return cfg


def stage_steps(args) -> int:
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps {args.steps}: give at least 1 HPT step per source")
        return args.steps
    configured = load_config(get_defaults(), args.config, ["METHOD", "hpt", *args.overrides]).SOLVER.MAX_ITER
    return configured or PAPER_STEPS


def probe_config(args, target: Path, builtin: str | None, weights: Path, output: Path) -> CfgNode:
    overrides = [item for pair in args.probe_opt for item in pair]
    for key in ("MODEL.WEIGHTS", "OUTPUT_DIR", "DATASETS.ROOT"):
        if key in overrides[0::2]:
            raise ConfigError(f"--probe-opt {key} is set by {TOOL} (--init, --output, --target)")
    if builtin:  # the generated set's root: transfer.py's demo recipe for it, on the domain's splits
        overrides += ["DATASETS.BUILTIN", builtin]
    cfg, _, _ = load_task_config(get_task("linear"), args.probe_config, target.parent if builtin else target,
                                 overrides)
    cfg.TASK = "linear"
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.OUTPUT_DIR = str(output)
    cfg.freeze()
    validate_classification_config(cfg)
    return cfg


# --- the work -----------------------------------------------------------------------------------------------------


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def run_stage(cfg: CfgNode, device, logger) -> dict:
    """The HPT stage of one source, or the finished one a previous run left (stage.json with the same config)."""
    output = Path(cfg.OUTPUT_DIR)
    last = output / "last.pth"
    record = read_json(output / STAGE_RECORD)
    if record is not None and last.is_file():
        changed = changed_keys(record["config"], cfg.dump())
        if changed:
            raise ValueError(f"{output} holds a finished stage with other settings ({', '.join(changed)}): run with "
                             "the same options, or choose another --output")
        sha256 = checkpoint_id(last)
        if sha256 == record["sha256"]:
            logger.info("%s: reusing the finished stage %s (%d steps)", output.name, last, record["steps"])
            return record | {"reused": True}
        logger.warning("%s changed since its stage finished: resuming it", last)
    elif (output / "config.yaml").is_file() and last.is_file():
        changed = changed_keys((output / "config.yaml").read_text(), cfg.dump())
        if changed:
            raise ValueError(f"{output} holds a stage begun with other settings ({', '.join(changed)}): run with the "
                             "same options, or choose another --output")
    started = time.perf_counter()
    path = train(cfg, device, resume=True)  # continues a stage cut short; from step 0 if there is none
    record = {"checkpoint": str(path), "sha256": checkpoint_id(path), "steps": cfg.SOLVER.MAX_ITER,
              "seconds": round(time.perf_counter() - started, 1), "config": cfg.dump()}
    write_json(output / STAGE_RECORD, record)
    return record | {"reused": False}


def run_probe(cfg: CfgNode, sha256: str, db, logger) -> dict:
    """The linear probe of one checkpoint on the target, or the score a previous run wrote for the same file and
    config; returns the score record (val/test metrics of the head chosen on val)."""
    output = Path(cfg.OUTPUT_DIR)
    record = read_json(output / SCORE_RECORD)
    if record is not None and record["sha256"] == sha256 and not changed_keys(record["config"], cfg.dump()):
        logger.info("%s: reusing the probe's score of %s", output, cfg.MODEL.WEIGHTS)
        return record | {"reused": True}
    started = time.perf_counter()
    setup_logger(output)
    row = RecordedRun(default_db_path(db), run_record(cfg))  # a linear-probe run like tools/transfer.py's
    row.finish(row.track(partial(get_task("linear").run, cfg)))
    sweep = json.loads((output / "sweep.json").read_text())
    chosen = sweep["chosen"]
    record = {"checkpoint": cfg.MODEL.WEIGHTS, "sha256": sha256, "metric": sweep["metric"],
              "score": sweep["val"][chosen][sweep["metric"]], "val": sweep["val"][chosen],
              "test": sweep["test"][chosen], "params": sweep["params"][chosen],
              "seconds": round(time.perf_counter() - started, 1), "config": cfg.dump()}
    write_json(output / SCORE_RECORD, record)
    return record | {"reused": False}


def candidate_row(name: str, source: str | None, stage: dict, score: dict, probe_cfg: CfgNode,
                  stage_cfg: CfgNode | None) -> dict:
    """One candidate of selection.json: its stage (for the base: none, 0 steps) and its probe score."""
    return {"name": name, "source": source, "steps": stage["steps"], "checkpoint": stage["checkpoint"],
            "sha256": stage["sha256"], "score": score["score"], "metric": score["metric"], "val": score["val"],
            "test": score["test"], "probe_params": score["params"], "probe_dir": probe_cfg.OUTPUT_DIR,
            "stage_seconds": stage["seconds"], "probe_seconds": score["seconds"],
            "reused": stage["reused"] and score["reused"],
            "pretrain_config": stage_cfg.dump() if stage_cfg is not None else None}


def ranked(rows: list[dict]) -> list[dict]:
    """Highest score first; equal scores keep the order given (the base reference row last among them)."""
    return sorted(rows, key=lambda row: -row["score"])


def table(rows: list[dict], metric: str, steps: int, target: str) -> list[str]:
    lines = [f"Source selection for {target}: linear probe val {metric} after {steps} HPT steps per source "
             f"(trained on train, chosen on val; test for reference)", ""]
    header = ["rank", "source", "steps", f"val {metric}", f"test {metric}", "checkpoint"]
    cells = [header]
    rank = 0
    for row in rows:
        if row["name"] != BASE_NAME:
            rank += 1
        cells.append([str(rank) if row["name"] != BASE_NAME else "-",
                      row["name"] if row["name"] != BASE_NAME else "(base)", str(row["steps"]),
                      f"{row['score']:.2f}", f"{row['test'].get(metric, float('nan')):.2f}", row["checkpoint"]])
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    return lines


def main(args) -> int:
    base = Path(args.init)
    if not base.is_file():
        raise FileNotFoundError(f"--init {base}: no such file")
    base = base.resolve()
    overrides = list(args.overrides)
    check_overrides(overrides)
    if len(overrides) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd number: {overrides}")
    sources = resolve_sources(args.sources)
    target, builtin = resolve_target(args.target)
    output = output_directory(args.output or Path("work") / "select" / (builtin or target.name), "--output").resolve()
    steps = stage_steps(args)
    _, base_meta = load_backbone(base)
    base_arch = base_meta["arch"]
    stage_configs = {name: pretrain_config(args, base, base_arch, steps, source, output / name)
                     for name, source in sources}  # every config checked before any work
    probe_configs = {name: probe_config(args, target, builtin, output / name / "last.pth", output / name / "probe")
                     for name, _ in sources}
    probe_configs[BASE_NAME] = probe_config(args, target, builtin, base, output / BASE_NAME / "probe")
    device = init_distributed()

    with lock_output_dir(output):
        logger = setup_logger(output)
        base_sha256 = checkpoint_id(base)
        logger.info("Source selection: base %s (%s, sha256 %s), %d sources, target %s, %d HPT steps each", base,
                    base_arch, base_sha256[:12], len(sources), target, steps)
        rows = []
        for name, source in sources:
            stage = run_stage(stage_configs[name], device, logger)
            setup_logger(output)
            score = run_probe(probe_configs[name], stage["sha256"], args.db, logger)
            setup_logger(output)
            logger.info("%s: val %s %.2f (%s)", name, score["metric"], score["score"], stage["checkpoint"])
            rows.append(candidate_row(name, str(source), stage, score, probe_configs[name], stage_configs[name]))
        score = run_probe(probe_configs[BASE_NAME], base_sha256, args.db, logger)
        setup_logger(output)
        base_stage = {"steps": 0, "checkpoint": str(base), "sha256": base_sha256, "seconds": 0.0, "reused": True}
        rows.append(candidate_row(BASE_NAME, None, base_stage, score, probe_configs[BASE_NAME], None))
        order = ranked(rows)
        winner = next(row for row in order if row["name"] != BASE_NAME)
        metric = winner["metric"]
        lines = table(order, metric, steps, args.target)
        base_row = rows[-1]
        if base_row["score"] > winner["score"]:
            note = (f"note: the base alone scores higher ({base_row['score']:.2f}) than every source stage; source "
                    "pretraining is optional (§3): the target stage may start from the base instead")
            lines += ["", note]
            logger.warning("%s", note)
        selection = {
            "tool": TOOL, "protocol": {
                "paper": "Reed et al. 2022, HPT: §3 Source pretraining (task-aware search), §4.3, appendix A",
                "stage": f"METHOD hpt from the base, {steps} steps on each source (SOLVER.MAX_ITER)",
                "score": f"linear probe fitted on the target's train split, head chosen and scored on val ({metric})",
            },
            "arguments": vars(args),
            "base": {"path": str(base), "sha256": base_sha256, "arch": base_arch, "method": base_meta.get("method"),
                     "format": base_meta.get("source_format")},
            "target": {"argument": args.target, "path": str(target), "builtin": builtin},
            "sources": {name: str(source) for name, source in sources},
            "steps": steps, "metric": metric, "split": "val",
            "pretrain_config_file": str(Path(args.config).resolve()), "pretrain_overrides": overrides,
            "probe_config_file": str(Path(args.probe_config).resolve()) if args.probe_config else None,
            "probe_overrides": [item for pair in args.probe_opt for item in pair],
            "probe_config": probe_configs[BASE_NAME].dump(),
            "candidates": order,
            "ranking": [row["name"] for row in order if row["name"] != BASE_NAME],
            "winner": {"name": winner["name"], "source": winner["source"], "checkpoint": winner["checkpoint"],
                       "sha256": winner["sha256"], "score": winner["score"]},
        }
        write_json(output / "selection.json", selection)
        atomic_write_text(output / "selection.md", "\n".join(lines) + "\n")
        logger.info("Selection written to %s", output / "selection.json")
    print("\n" + "\n".join(lines) + f"\n\nwinner: {winner['name']}  selection: {output / 'selection.json'}")
    print(winner["checkpoint"])
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(TOOL, main, parse_args()))
