"""Transfer runs launched on Ray by the sweeps and the suite: each run is ``tools/transfer.py`` in a fresh process.

A subprocess rather than an in-process call because a run owns its process: its torch thread count, its output
directory lock, its log handlers and (with ``--db``) its own row in the results store, written by transfer.py as
``running`` and then ``finished`` or ``failed``. The sweep and the suite never write those rows themselves; they
read the store afterwards. Ray is imported only here and only when a session starts, so that no other tool pays
for it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .store import flat_metrics

REPO_ROOT = Path(__file__).resolve().parents[2]
TRANSFER_SCRIPT = REPO_ROOT / "tools" / "transfer.py"
RAY_REQUIREMENT = "ray[tune]==2.60.0"
LOG_NAME = "transfer_output.txt"  # transfer.py's stdout and stderr, next to its own log.txt
_TAIL = 2000  # characters of a failed run's output kept in sweep.json / suite.json


def main_metrics(cfg) -> list[str]:
    """The metric(s) a task is compared by, as flat names of its metrics.json (``store.flat_metrics``).

    The papers' headline numbers: box AP50 on VOC (MoCo Table 2), box and mask AP on COCO, COCO AP on BDD, mIoU on
    Cityscapes, top-1 for the probes; the kNN probe's first k of KNN.KS, the few-shot probe's first shot count,
    the stage-wise probe's last stage. Multi-label data reports AUROC/mAP instead of top-1 (not covered here).
    """
    task = cfg.TASK
    if task == "voc_fasterrcnn":
        return ["bbox/AP50"]
    if task in ("coco_maskrcnn", "coco_maskrcnn_fpn"):
        return ["bbox/AP", "segm/AP"]
    if task in ("bdd_fasterrcnn", "coco_fasterrcnn_fpn"):
        return ["bbox/AP"]
    if task == "cityscapes_deeplabv3":
        return ["sem_seg/mIoU"]
    if task in ("linear", "finetune"):
        return [f"{task}/top1"]
    if task == "knn":
        return [f"knn/k{cfg.KNN.KS[0]}/top1"]
    if task == "fewshot":
        return [f"fewshot/{cfg.FEWSHOT.WAYS}way{cfg.FEWSHOT.SHOTS[0]}shot/top1"]
    if task == "stagewise":
        return [f"stagewise/{cfg.PROBE.STAGES[-1]}/top1"]
    raise KeyError(f"task {task!r} has no main metric in benchmarks.results.transfer_runs.main_metrics")


def parse_resources(text: str | None) -> dict[str, float]:
    """``--resources cpu=2,gpu=1`` -> ``{"cpu": 2.0, "gpu": 1.0}``; one CPU and no GPU unless given."""
    resources = {"cpu": 1.0, "gpu": 0.0}
    for item in filter(None, (text or "").split(",")):
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name not in resources or not value:
            raise ValueError(f"--resources {text!r}: give cpu=N and/or gpu=M separated by commas, not {item!r}")
        try:
            resources[name] = float(value)
        except ValueError:
            raise ValueError(f"--resources {text!r}: {name}={value!r} is not a number") from None
    if resources["cpu"] < 1 or resources["gpu"] < 0:
        raise ValueError(f"--resources {text!r}: a trial needs cpu >= 1 and gpu >= 0")
    return resources


def transfer_command(task: str, weights: str, output: Path, *, seed=None, db: Path | None = None, data_root=None,
                     config_file=None, resume: bool = False, num_gpus: int = 1,
                     overrides: Sequence[str] = ()) -> list[str]:
    """The ``tools/transfer.py`` command line of one run (a list for ``subprocess``, no shell)."""
    command = [sys.executable, str(TRANSFER_SCRIPT), "--task", task, "--weights", weights, "--output", str(output)]
    for option, value in (("--seed", seed), ("--db", db), ("--data-root", data_root), ("--config", config_file)):
        if value is not None:
            command += [option, str(value)]
    if resume:
        command.append("--resume")
    if num_gpus > 1:
        command += ["--num-gpus", str(num_gpus)]
    return command + [str(item) for item in overrides]


def run_transfer(command: Sequence[str], task: str, output: str, cpus: float, env: Mapping[str, str],
                 cwd: str) -> dict:
    """Run one transfer command to its end (in a Ray worker); what happened, as plain data the driver can read.

    The process gets ``OMP_NUM_THREADS`` = its CPU share and the driver's working directory ``cwd`` where this
    machine has it (so relative paths in overrides mean what they meant to the user), else the repository root;
    its output is appended to ``<output>/transfer_output.txt``.
    The result carries the run's flat metrics (from its metrics.json) and the val metrics it chose by, if any, so
    that a driver on another machine of a cluster need not read the run's files.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    threads = str(max(1, int(cpus)))
    started = time.time()
    with open(output / LOG_NAME, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        returncode = subprocess.run(list(command), stdout=log, stderr=subprocess.STDOUT,
                                    cwd=cwd if Path(cwd).is_dir() else REPO_ROOT,
                                    env={**os.environ, **env, "OMP_NUM_THREADS": threads}).returncode
    result = {"returncode": returncode, "wall_time": time.time() - started, "metrics": {}, "val_metrics": None,
              "error": None}
    if returncode != 0:
        text = (output / LOG_NAME).read_text(errors="replace")
        result["error"] = text[-_TAIL:]
        return result
    metrics_file = output / "metrics.json"
    if not metrics_file.is_file():
        result["error"] = f"{output}: transfer.py exited 0 without writing metrics.json"
        return result
    result["metrics"] = flat_metrics(json.loads(metrics_file.read_text()))
    result["val_metrics"] = val_metrics(task, output)
    return result


def val_metrics(task: str, output: Path) -> dict | None:
    """The val metrics a run chose its head or schedule by, as flat names, for the tasks that select on val.

    linear: the chosen head's val metrics in sweep.json; finetune: the chosen run's in finetune.json. Every other
    task reports one evaluation split only (its metrics.json), and selection uses that: None here.
    """
    if task == "linear" and (output / "sweep.json").is_file():
        sweep = json.loads((output / "sweep.json").read_text())
        return flat_metrics({"linear": sweep["val"][sweep["chosen"]]})
    if task == "finetune" and (output / "finetune.json").is_file():
        return flat_metrics({"finetune": json.loads((output / "finetune.json").read_text())["val"]})
    return None


def selection_split(cfg) -> str:
    """Which split a sweep selects on for ``cfg``'s task, in words for sweep.md."""
    if cfg.TASK in ("linear", "finetune"):
        return "val"
    if cfg.TASK == "knn":
        split = cfg.KNN.SPLIT
    elif cfg.TASK == "fewshot":
        split = cfg.FEWSHOT.SPLIT
    elif cfg.TASK == "stagewise":
        split = "test"
    else:
        tests = cfg.DATASETS.TEST
        split = tests if isinstance(tests, str) else ", ".join(tests)
    return (f"{split} (task {cfg.TASK} reports one evaluation split only, so selection is on that split"
            + (", not on a held-out val split)" if split != "val" else ")"))


def resolve_metric(name: str, available: Sequence[str]) -> str:
    """A metric named in full (``knn/k20/top1``) or by a unique last part (``AP50`` -> ``bbox/AP50``)."""
    if name in available:
        return name
    matches = [key for key in available if key.endswith("/" + name)]
    if len(matches) == 1:
        return matches[0]
    what = f"matches {', '.join(matches)}: name one in full" if matches else "is not among them"
    raise KeyError(f"--metric {name!r}: the runs report {', '.join(sorted(available))}; {name!r} {what}")


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def absolute(path):
    """A path option as the driver means it, for a process started elsewhere; ``None`` and ``none`` stay."""
    return path if path in (None, "none") else str(Path(path).resolve())


def trial_environment() -> dict[str, str]:
    """What a run on a Ray worker inherits from the driver: transferlab's own variables (cache, store)."""
    return {name: value for name, value in os.environ.items() if name.startswith("TRANSFERLAB_")}


@contextlib.contextmanager
def ray_session(address: str | None = None):
    """``ray.init`` for the block: the cluster at ``address``, or a local Ray with this machine's CPUs (no
    dashboard, temp files under /tmp), shut down afterwards. Workers import this tree (PYTHONPATH), so the repo
    must be at the same path on every node of a cluster."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"sweeps and suites run on Ray: pip install '{RAY_REQUIREMENT}' "
                          "(or the extra: pip install -e '.[sweep]')") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine unless asked
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
    previous = signal.signal(signal.SIGTERM, _terminate)  # `kill` shuts Ray down too, as Ctrl-C does
    try:
        yield ray
    finally:
        signal.signal(signal.SIGTERM, previous)
        ray.shutdown()


def _terminate(signum, frame):
    print(f"terminated by signal {signum}: Ray shuts down; the runs in progress keep their 'running' rows (a suite "
          "run again runs their cells again)", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)
