#!/usr/bin/env python
"""``tools/diagnose.py`` against tidecv 1.0.1 as whole processes, on the COCO-scale set, and that both agree.

  python benchmarks/perf/diagnose_speed.py               # 5,000 images, ~37k objects, 500k detections (minutes)
  python benchmarks/perf/diagnose_speed.py --scale 0.02  # 100 images: a quick check

What a user waits for is the whole command, imports and file parsing included, so both tools run as separate
processes from the same json files (``tide_speed.synthetic_result_set``), timed by wall clock, alternating,
``--repeats`` times each after one warm-up of each on a small set (bytecode caches and the page cache are warm
for both; the caches go to a temporary ``PYTHONPYCACHEPREFIX``, so neither the repo nor the venv is written).

- transferlab: ``tools/diagnose.py --gt GT --dets DETS --out DIR`` with its default outputs: bbox TIDE, Hoiem,
  tide.json, hoiem.json, diagnosis.md and the three charts as PNG and SVG.
- tidecv, as its README runs it, doing what gives the same numbers: ``datasets.COCO`` and ``COCOResult`` from the
  files, ``TIDE().evaluate_range`` over COCO's ten IoU thresholds (our AP is 0.50:0.95; errors at 0.5),
  ``summarize()`` (its printed tables) and ``plot(out)`` (its summary PNG). tidecv has no Hoiem analysis: we do
  more work in our process, so the ratio is conservative.

Needs tidecv (the Makefile installs it, ``--no-deps``, next to the ``test`` extra). Checks that every main and
special dAP agrees within 0.01 (as ``tide_speed.py``) and exits non-zero otherwise.
The last line is ``diagnose end to end: transferlab … s, tidecv … s, …x, max |dAP diff| …`` (medians).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tidecv_child(gt_path: str, dets_path: str, out_dir: str) -> None:
    """The tidecv process: what a tidecv user runs, then its numbers into ``out_dir/tidecv.json``."""
    from tidecv import TIDE, datasets

    tide = TIDE()
    gt, dets = datasets.COCO(gt_path), datasets.COCOResult(dets_path)
    tide.evaluate_range(gt, dets, mode=TIDE.BOX)
    tide.summarize()
    tide.plot(out_dir)
    numbers = {"AP": sum(run.ap for run in tide.run_thresholds[dets.name]) / len(tide.run_thresholds[dets.name]),
               "AP50": tide.run_thresholds[dets.name][0].ap,
               "main": tide.get_main_errors()[dets.name], "special": tide.get_special_errors()[dets.name]}
    Path(out_dir, "tidecv.json").write_text(json.dumps(numbers))


def _timed(command: list, env: dict) -> float:
    tic = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - tic
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return seconds


def _write_set(directory: Path, num_images: int, seed: int) -> tuple[Path, Path]:
    from benchmarks.perf.tide_speed import synthetic_result_set

    gt, dets = synthetic_result_set(num_images, seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "gt.json", directory / "dets.json"
    paths[0].write_text(json.dumps(gt))
    paths[1].write_text(json.dumps(dets))
    print(f"{directory.name}: {num_images} images, {len(gt['annotations'])} annotations, {len(dets)} detections, "
          f"{sum(p.stat().st_size for p in paths) / 1e6:.0f} MB of json")
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of COCO's 5,000 images (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each tool (alternating)")
    parser.add_argument("--tidecv-child", nargs=3, metavar=("GT", "DETS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tidecv_child:
        return tidecv_child(*args.tidecv_child)
    sys.path.insert(0, str(REPO))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPYCACHEPREFIX=str(tmp / "pycache"), TIDE_PATH=str(tmp / "tide_data"), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

        def commands(gt, dets, run):
            ours = [sys.executable, "tools/diagnose.py", "--gt", str(gt), "--dets", str(dets),
                    "--out", str(tmp / f"ours{run}")]
            theirs = [sys.executable, str(Path(__file__).resolve()), "--tidecv-child", str(gt), str(dets),
                      str(tmp / f"tidecv{run}")]
            return ours, theirs

        for command in commands(*_write_set(tmp / "warmup", max(1, round(5000 * min(args.scale, 0.02))), 1), "_w"):
            _timed(command, env)
        gt, dets = _write_set(tmp / "set", max(1, round(5000 * args.scale)), args.seed)
        times = {"transferlab": [], "tidecv": []}
        for run in range(args.repeats):
            ours, theirs = commands(gt, dets, run)
            times["transferlab"].append(_timed(ours, env))
            times["tidecv"].append(_timed(theirs, env))
            print(f"run {run}: transferlab {times['transferlab'][-1]:.2f} s, tidecv {times['tidecv'][-1]:.2f} s",
                  flush=True)
        ours = json.loads((tmp / "ours0" / "tide.json").read_text())["dets"]["bbox"]
        theirs = json.loads((tmp / "tidecv0" / "tidecv.json").read_text())
        charts = sorted(p.name for p in (tmp / "ours0").glob("*.png")) + sorted(
            p.name for p in (tmp / "tidecv0").rglob("*.png"))
    print(f"charts: {', '.join(charts)}")
    print(f"AP50 {ours['AP50']:.3f} (tidecv {theirs['AP50']:.3f}), AP {ours['AP']:.3f} (tidecv {theirs['AP']:.3f})")
    print("dAP          " + " ".join(f"{t:>8}" for t in (*ours["main"], *ours["special"])))
    print("transferlab  " + " ".join(f"{v:8.3f}" for v in (*ours["main"].values(), *ours["special"].values())))
    print("tidecv       " + " ".join(f"{theirs[group][t]:8.3f}" for group in ("main", "special") for t in ours[group]))
    worst = max(abs(ours[group][t] - theirs[group][t]) for group in ("main", "special") for t in ours[group])
    ours_time, tidecv_time = (statistics.median(times[tool]) for tool in ("transferlab", "tidecv"))
    print(f"diagnose end to end: transferlab {ours_time:.2f} s, tidecv {tidecv_time:.2f} s, "
          f"{tidecv_time / ours_time:.2f}x, max |dAP diff| {worst:.3f}")
    if worst > 0.01:
        sys.exit("dAPs differ by more than 0.01")


if __name__ == "__main__":
    main()
