"""Training checkpoints that resume exactly: model, optimizer, scheduler, scaler, iteration, every rank's RNG."""
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from converters import CheckpointError, atomic_torch_save, load_torch_file
from converters.io import atomic_write_text, remove_stale_temporaries

from .distributed import all_gather_object, get_rank, get_world_size, is_main_process, synchronize
from .errors import ExistingRunError
from .lock import holds_lock
from .seed import get_rng_state, seed_everything, set_rng_state

logger = logging.getLogger("transferlab")

LAST_CHECKPOINT = "last_checkpoint"
TRAINING_STATE_KEYS = ("model", "iteration", "rng_states")  # what ``Checkpointer.save`` always writes


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def clean_stale_temporaries(output_dir) -> None:
    """Remove what writes killed midway left in ``output_dir`` (hidden ``*.tmp`` files, up to a checkpoint's size).

    Only the process holding the directory's lock may: it knows no other writer is active there.
    """
    if not (is_main_process() and holds_lock(output_dir)):
        return
    for path, size in remove_stale_temporaries(output_dir).items():
        logger.info("Removed %s (%.1f MB), left by a write that was killed before it finished", path, size / 2**20)


class Checkpointer:
    """Writes ``model_{iter:07d}.pth`` / ``model_final.pth`` atomically and a ``last_checkpoint`` pointer.

    ``iteration`` stored in a checkpoint is the number of finished iterations, i.e. where training resumes.
    ``wrap`` turns the training state into the object written (pretraining embeds it in a canonical backbone
    checkpoint) and ``unwrap`` takes it out of a loaded file again; ``final_name`` is the end-of-run file's stem.
    """

    def __init__(self, output_dir, model, optimizer=None, scheduler=None, scaler=None, *,
                 final_name: str = "model_final", wrap: Callable[[dict], object] | None = None,
                 unwrap: Callable[[Path, object], object] | None = None):
        self.output_dir = Path(output_dir)
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.final_name = final_name
        self.wrap, self.unwrap = wrap, unwrap
        clean_stale_temporaries(self.output_dir)  # fresh or resumed, a run starts without a killed write's debris

    def save(self, name: str, iteration: int) -> None:
        """Collective: every rank must call it (each contributes its RNG state)."""
        rng_states = all_gather_object(get_rng_state())
        if is_main_process():
            state = {"model": unwrap(self.model).state_dict(), "iteration": iteration, "rng_states": rng_states}
            for key, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler)):
                if obj is not None:
                    state[key] = obj.state_dict()
            path = self.output_dir / f"{name}.pth"
            atomic_torch_save(state if self.wrap is None else self.wrap(state), path)
            atomic_write_text(self.output_dir / LAST_CHECKPOINT, path.name)
            logger.info("Saved checkpoint %s (iteration %d)", path, iteration)
        synchronize()

    def last_checkpoint(self):
        pointer = self.output_dir / LAST_CHECKPOINT
        return self.output_dir / pointer.read_text().strip() if pointer.is_file() else None

    def check_fresh_start(self) -> None:
        """A new run must not silently overwrite an earlier one's checkpoints."""
        last = self.last_checkpoint()
        if last is not None:
            raise ExistingRunError(
                f"{self.output_dir} already holds a run (last checkpoint {last.name}); "
                "pass --resume to continue it, or choose another --output"
            )

    def resume(self) -> int:
        """Load the last checkpoint in full; returns the iteration to continue from (0 if there is none)."""
        path = self.last_checkpoint()
        if path is None:
            logger.info("No checkpoint in %s: starting from iteration 0", self.output_dir)
            return 0
        pointer = self.output_dir / LAST_CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"{pointer} names {path.name}, which is not in {self.output_dir}: write the name "
                                    "of a model_*.pth there into it, or start a new run in another --output")
        state = load_torch_file(path)
        if self.unwrap is not None:
            state = self.unwrap(path, state)
        lacking = [key for key in TRAINING_STATE_KEYS if not (isinstance(state, Mapping) and key in state)]
        if lacking:
            raise CheckpointError(
                f"{path} (named by {pointer}) holds no training state to resume (no {', '.join(lacking)}): it is not "
                "a checkpoint this trainer wrote; a backbone checkpoint starts a new run with --weights instead")
        try:
            unwrap(self.model).load_state_dict(state["model"])
            for key, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler)):
                if obj is not None and key in state:
                    obj.load_state_dict(state[key])
        except (RuntimeError, ValueError, KeyError) as error:  # torch's mismatch reports: many lines, no file name
            raise CheckpointError(f"{path} does not fit the model and optimizer this config builds (was the config "
                                  f"changed since it was saved?): {' '.join(str(error).split())[:500]}") from error
        rng_states = state["rng_states"]
        if len(rng_states) == get_world_size():
            set_rng_state(rng_states[get_rank()])
        else:
            logger.warning("Checkpoint has RNG states of %d processes, this run has a different count: "
                           "resuming without exact RNG continuity", len(rng_states))
        logger.info("Resumed from %s at iteration %d", path, state["iteration"])
        return state["iteration"]


def start_iteration(checkpointer: "Checkpointer", seed: int, *, resume: bool, eval_only: bool,
                    load_whole_model: Callable[[], bool], initialize: Callable[[], None], whole_model: str) -> int:
    """Where a task's run starts, as Detectron2's train_net decides it.

    ``--eval-only`` into a directory without a checkpoint evaluates the whole model in ``MODEL.WEIGHTS``
    (``load_whole_model`` loads it and says whether it was one: ``whole_model`` names what it must be); ``--resume``
    and ``--eval-only`` continue from the last checkpoint; otherwise a fresh run (refusing to overwrite another)
    starts at 0 from ``initialize`` (the pretrained backbone), with per-rank seeds for the sampling.
    """
    has_checkpoint = checkpointer.last_checkpoint() is not None
    if eval_only and not has_checkpoint:
        if not load_whole_model():
            raise FileNotFoundError(f"--eval-only: no checkpoint in {checkpointer.output_dir} to evaluate, and "
                                    f"MODEL.WEIGHTS is not {whole_model}")
        return 0
    if (resume or eval_only) and has_checkpoint:
        return checkpointer.resume()
    if not resume:
        checkpointer.check_fresh_start()
    initialize()
    seed_everything(seed + get_rank())  # distinct sampling per rank, as in Detectron2
    return 0
