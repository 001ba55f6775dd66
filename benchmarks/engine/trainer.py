"""An iteration-based training loop with the guarantees long GPU runs need: periodic atomic checkpoints,
exact resume, DDP, mixed precision, gradient clipping, progress with ETA, training events, and periodic
evaluation."""
import datetime
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .checkpoint import Checkpointer
from .distributed import is_main_process, reduce_scalars
from .events import EventWriter, peak_memory_mb

logger = logging.getLogger("transferlab")


def amp_dtype(device: torch.device, enabled: bool):
    """fp16 on CUDA (with a GradScaler), bf16 on CPUs (AMX/AVX-512 make it about twice as fast there)."""
    if not enabled:
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


@dataclass
class TrainingSchedule:
    max_iter: int
    checkpoint_period: int
    eval_period: int = 0
    log_period: int = 20
    clip_type: str | None = None  # None, "value" or "norm"
    clip_value: float = 1.0
    clip_norm_type: float = 2.0


def is_loss(name: str) -> bool:
    """Detectron2's convention: the entries of a losses dict named ``loss*`` are summed and optimised; the others
    (e.g. a contrastive accuracy) are only logged."""
    return name.startswith("loss")


class IterationTrainer:
    """Reads top to bottom in ``train``; the task supplies how a batch becomes losses and how to evaluate."""

    def __init__(self, model, optimizer, scheduler, checkpointer: Checkpointer, schedule: TrainingSchedule,
                 make_train_iterator: Callable[[int], object], compute_losses: Callable, device: torch.device,
                 events: EventWriter, amp: bool = False, evaluate: Callable[[int], dict] | None = None,
                 before_evaluate: Callable[[int], None] | None = None, name: str = "train"):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.checkpointer = checkpointer
        self.schedule = schedule
        self.make_train_iterator = make_train_iterator
        self.compute_losses = compute_losses
        self.device = device
        self.amp_dtype = amp_dtype(device, amp)
        self.scaler = checkpointer.scaler
        self.events = events
        self.evaluate = evaluate
        self.before_evaluate = before_evaluate
        self.name = name  # of the progress bar

    def _clip_gradients(self):
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.schedule.clip_type == "value":
            torch.nn.utils.clip_grad_value_(params, self.schedule.clip_value)
        elif self.schedule.clip_type == "norm":
            torch.nn.utils.clip_grad_norm_(params, self.schedule.clip_value, self.schedule.clip_norm_type)
        elif self.schedule.clip_type is not None:
            raise ValueError(f"gradient clip type must be 'value' or 'norm', got {self.schedule.clip_type!r}")

    def _step(self, batch, iteration: int) -> dict:
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            losses = self.compute_losses(self.model, batch)
        total = sum(value for key, value in losses.items() if is_loss(key))
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"loss became {total.item()} at iteration {iteration}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                + " (lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS, or check the data)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip_gradients()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self._clip_gradients()
            self.optimizer.step()
        self.scheduler.step()
        values = {k: v.detach().item() for k, v in losses.items()}
        values["total_loss"] = total.detach().item()
        return values

    def _log(self, done: int, window: list, window_time: float, window_data_time: float, lr: float) -> None:
        schedule = self.schedule
        means = reduce_scalars({k: sum(w[k] for w in window) / len(window) for k in window[0]})
        seconds_per_iter = window_time / len(window)
        eta = datetime.timedelta(seconds=int(seconds_per_iter * (schedule.max_iter - done)))
        memory = peak_memory_mb(self.device)
        logger.info("iter %d/%d  %s  lr %.5g  %.3f s/iter  data %.3f s  mem %.0f MB  eta %s", done, schedule.max_iter,
                    "  ".join(f"{k} {v:.4f}" for k, v in means.items()), lr, seconds_per_iter,
                    window_data_time / len(window), memory, eta)
        self.events.write(done, {**means, "lr": lr, "time": seconds_per_iter,
                                 "data_time": window_data_time / len(window), "peak_memory_mb": memory})
        if not all(math.isfinite(v) for v in means.values()):
            raise FloatingPointError(f"non-finite mean loss over the last window at iteration {done}")

    def train(self, start_iter: int) -> dict | None:
        """Train from ``start_iter`` to ``max_iter``; returns the final evaluation (if any).

        At an evaluation step the order is Detectron2's: ``before_evaluate`` (precise BN), the checkpoint
        (``model_final`` at the end), then the evaluation. The checkpoint thus holds what was evaluated, and a
        crash in evaluation costs no training.
        """
        schedule = self.schedule
        metrics = None
        logger.info("Training from iteration %d to %d", start_iter, schedule.max_iter)
        self.model.train()
        data = iter(self.make_train_iterator(start_iter))
        progress = tqdm(total=schedule.max_iter, initial=start_iter, desc=self.name, dynamic_ncols=True,
                        disable=not is_main_process())
        started, window_time, window_data_time, window = time.perf_counter(), 0.0, 0.0, []
        for iteration in range(start_iter, schedule.max_iter):
            tic = time.perf_counter()
            batch = next(data)
            window_data_time += time.perf_counter() - tic
            lr = self.optimizer.param_groups[0]["lr"]
            window.append(self._step(batch, iteration))
            window_time += time.perf_counter() - tic
            done = iteration + 1
            progress.update(1)
            progress.set_postfix(loss=f"{window[-1]['total_loss']:.3f}", lr=f"{lr:.2e}")

            if done % schedule.log_period == 0 or done == schedule.max_iter:
                self._log(done, window, window_time, window_data_time, lr)
                window_time, window_data_time, window = 0.0, 0.0, []

            final = done == schedule.max_iter
            evaluate = self.evaluate is not None and (final or (schedule.eval_period
                                                                and done % schedule.eval_period == 0))
            if evaluate and self.before_evaluate is not None:
                progress.clear()
                self.before_evaluate(done)
            if final:
                self.checkpointer.save(self.checkpointer.final_name, done)
            elif schedule.checkpoint_period and done % schedule.checkpoint_period == 0:
                self.checkpointer.save(f"model_{done - 1:07d}", done)
            if evaluate:
                progress.clear()
                metrics = self.evaluate(done)
                self.model.train()
        progress.close()
        if start_iter >= schedule.max_iter and self.evaluate is not None:
            metrics = self.evaluate(start_iter)
        logger.info("Training took %s", datetime.timedelta(seconds=int(time.perf_counter() - started)))
        return metrics
