"""One run per output directory: a second run into a locked one stops at once, naming the directory and the holder."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from benchmarks.engine.distributed import init_distributed
from benchmarks.engine.launch import launch
from benchmarks.engine.lock import LOCK_FILE, OutputLockedError, holds_lock, lock_output_dir

from .conftest import REPO

HOLD = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from benchmarks.engine.lock import lock_output_dir
with lock_output_dir(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


@pytest.fixture()
def held(tmp_path):
    """``tmp_path / "run"`` locked by another process, which ends when the test ends."""
    output = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(output)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    yield output, holder
    holder.stdin.close()
    holder.wait(timeout=60)


def run_tool(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=timeout)


def assert_refused(result, tool, output, holder):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.splitlines() == [result.stderr.strip()]
    message = result.stderr.strip()
    assert message.startswith(f"{tool}: error: output directory {output} is in use by another run (pid {holder.pid}")
    assert "Traceback" not in result.stdout + result.stderr


def test_a_second_run_into_a_locked_directory_fails_at_once_and_writes_nothing(held):
    output, holder = held
    assert (output / LOCK_FILE).read_text().startswith(f"pid {holder.pid} on ")
    pretrain = run_tool("tools/pretrain.py", "--config", "configs/pretrain/demo.yaml", "--output", output)
    assert_refused(pretrain, "pretrain.py", output, holder)
    transfer = run_tool("tools/transfer.py", "--task", "coco_maskrcnn", "--weights", "none", "--output", output)
    assert_refused(transfer, "transfer.py", output, holder)
    assert sorted(path.name for path in output.iterdir()) == [LOCK_FILE]  # no log.txt, no config.yaml

    holder.stdin.close()  # the holder ends: the lock is free again, although .lock stays
    holder.wait(timeout=60)
    with lock_output_dir(output):
        assert holds_lock(output)
    assert not holds_lock(output)


def test_under_torchrun_every_rank_fails_instead_of_waiting(held):
    output, holder = held
    result = run_tool("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "tools/pretrain.py",
                      "--config", "configs/pretrain/demo.yaml", "--output", output, timeout=240)
    assert result.returncode != 0
    # each rank reports it (torchrun may stop the other one first); the traceback is torchrun's own summary
    errors = [line for line in result.stderr.splitlines() if line.startswith("pretrain.py: error: ")]
    assert errors and all(f"{output} is in use by another run (pid {holder.pid}" in error for error in errors)
    assert "exitcode  : 2" in result.stderr


def _lock_in_each_rank(directories: list, results: str) -> None:
    init_distributed()
    outcomes = []
    for output in directories:
        try:
            with lock_output_dir(output):
                outcomes.append(f"locked, holds_lock {holds_lock(output)}")
        except Exception as error:  # the test reads what each rank saw
            outcomes.append(f"{type(error).__name__}: {error}")
    (Path(results) / f"rank{dist.get_rank()}").write_text("\n".join(outcomes))
    dist.destroy_process_group()


def test_rank_0_locks_and_every_rank_learns_the_outcome(tmp_path):
    free, taken, results = tmp_path / "free", tmp_path / "taken", tmp_path / "results"
    results.mkdir()
    with lock_output_dir(taken):  # held by this process: both ranks must stop, neither may wait for the other
        launch(_lock_in_each_rank, 2, ([str(free), str(taken)], str(results)))
    (free0, taken0), (free1, taken1) = ((results / f"rank{r}").read_text().split("\n") for r in (0, 1))
    assert (free0, free1) == ("locked, holds_lock True", "locked, holds_lock False")  # only rank 0 locks
    assert taken0 == taken1
    assert taken0.startswith(f"OutputLockedError: output directory {taken} is in use by another run "
                             f"(pid {os.getpid()}")


def test_lock_in_process_and_output_that_is_a_file(tmp_path):
    busy = rf"{tmp_path / 'run'} is in use by another run \(pid {os.getpid()} "
    with lock_output_dir(tmp_path / "run"):
        with pytest.raises(OutputLockedError, match=busy):
            with lock_output_dir(tmp_path / "run"):
                pass
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match=rf"output directory {tmp_path / 'file'} exists and is not a dir"):
        with lock_output_dir(tmp_path / "file"):
            pass
