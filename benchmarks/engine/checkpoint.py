"""Training checkpoints that resume exactly: model, optimizer, scheduler, scaler, iteration, every rank's RNG."""
import logging
import os
from pathlib import Path

from converters import atomic_torch_save, load_torch_file

from .distributed import all_gather_object, get_rank, get_world_size, is_main_process, synchronize
from .seed import get_rng_state, set_rng_state

logger = logging.getLogger("transferlab")

LAST_CHECKPOINT = "last_checkpoint"


class ExistingRunError(RuntimeError):
    pass


def unwrap(model):
    return model.module if hasattr(model, "module") else model


class Checkpointer:
    """Writes ``model_{iter:07d}.pth`` / ``model_final.pth`` atomically and a ``last_checkpoint`` pointer.

    ``iteration`` stored in a checkpoint is the number of finished iterations, i.e. where training resumes.
    """

    def __init__(self, output_dir, model, optimizer=None, scheduler=None, scaler=None):
        self.output_dir = Path(output_dir)
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler

    def save(self, name: str, iteration: int) -> None:
        """Collective: every rank must call it (each contributes its RNG state)."""
        rng_states = all_gather_object(get_rng_state())
        if is_main_process():
            state = {"model": unwrap(self.model).state_dict(), "iteration": iteration, "rng_states": rng_states}
            for key, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler)):
                if obj is not None:
                    state[key] = obj.state_dict()
            path = self.output_dir / f"{name}.pth"
            atomic_torch_save(state, path)
            pointer = self.output_dir / LAST_CHECKPOINT
            tmp = pointer.with_suffix(".tmp")
            tmp.write_text(path.name)
            os.replace(tmp, pointer)
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
        state = load_torch_file(path)
        unwrap(self.model).load_state_dict(state["model"])
        for key, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler)):
            if obj is not None and key in state:
                obj.load_state_dict(state[key])
        rng_states = state["rng_states"]
        if len(rng_states) == get_world_size():
            set_rng_state(rng_states[get_rank()])
        else:
            logger.warning("Checkpoint has RNG states of %d processes, this run has a different count: "
                           "resuming without exact RNG continuity", len(rng_states))
        logger.info("Resumed from %s at iteration %d", path, state["iteration"])
        return state["iteration"]
