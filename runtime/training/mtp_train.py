"""Train an MTP drafter on cached target features: seeded, resumable, with a loss log.

For origin ``t`` of a window, draft step ``j`` (1-based) embeds token
``t + j``, attends over the target's keys at positions ``0 .. t``, and is
scored against what the target predicts after position ``t + j``
(self-distillation): the cross-entropy against the target's whole
distribution over the candidate vocabulary, computed from its stored
hidden state at ``t + j``. Step 1 starts from the target's hidden state at
``t``; each further step starts from the previous step's state, as in
drafting.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from draftwise.runtime.drafters.mtp_config import MTPConfig
from draftwise.runtime.drafters.mtp_model import Params, mtp_step
from draftwise.runtime.training.mtp_batches import Window, origin_mask

# mlx.optimizers.clip_grad_norm has no annotations (mlx 0.32.4); it returns
# the clipped gradients and their global norm before clipping.
_clip_grad_norm = cast(Callable[[Params, float], tuple[Params, mx.array]], optim.clip_grad_norm)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings; ``draft_steps`` is how many chained steps each origin trains."""

    draft_steps: int = 2
    epochs: int = 5
    learning_rate: float = 3e-4
    warmup_steps: int = 5
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 10


def window_loss(
    config: MTPConfig, params: Params, head_rows: mx.array, window: Window, draft_steps: int
) -> tuple[mx.array, mx.array]:
    """Return (mean distillation loss per prediction, number of predictions).

    A prediction's loss is the cross-entropy of the drafter's distribution
    over the candidates against the target's distribution over them. The
    target's logits come from its stored hidden state at the input token's
    position, so every candidate's probability carries a signal, not only
    the target's greedy choice.
    """
    origins = window.length - draft_steps
    mask = origin_mask(origins, window.length)
    state = window.hidden[:origins]
    total = mx.array(0.0)
    for step in range(1, draft_steps + 1):
        state, logits = mtp_step(
            config,
            params,
            head_rows,
            window.embeddings[step : step + origins],
            state,
            window.keys,
            window.values,
            step,
            mask,
        )
        teacher = mx.softmax(window.hidden[step : step + origins] @ head_rows.T, axis=-1)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        total = total - mx.sum(mx.stop_gradient(teacher) * logprobs)
    count = origins * draft_steps
    return total / count, mx.array(float(count))


def _schedule(settings: TrainSettings, total_steps: int) -> Callable[[mx.array], mx.array]:
    warmup = optim.linear_schedule(1e-7, settings.learning_rate, settings.warmup_steps)
    decay_steps = max(total_steps - settings.warmup_steps, 1)
    decay = optim.cosine_decay(settings.learning_rate, decay_steps, settings.learning_rate * 0.1)
    return optim.join_schedules([warmup, decay], [settings.warmup_steps])


class Trainer:
    """Owns parameters, optimizer and progress; `run` trains until ``epochs`` are done."""

    def __init__(
        self,
        config: MTPConfig,
        params: Params,
        head_rows: mx.array,
        windows: list[Window],
        settings: TrainSettings,
        out_dir: Path,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.params = params
        self.head_rows = head_rows
        self.windows = windows
        self.settings = settings
        self.out_dir = out_dir
        self.log = log
        self.total_steps = settings.epochs * len(windows)
        self.optimizer = optim.AdamW(
            learning_rate=_schedule(settings, self.total_steps), weight_decay=settings.weight_decay
        )
        self.step = 0
        self.tokens_seen = 0
        self.history: list[dict[str, Any]] = []
        self._loss_and_grad = mx.value_and_grad(self._loss)

    def _loss(self, params: Params, window: Window) -> tuple[mx.array, mx.array]:
        return window_loss(self.config, params, self.head_rows, window, self.settings.draft_steps)

    def order(self, epoch: int) -> list[int]:
        rng = np.random.default_rng(self.settings.seed * 1000 + epoch)
        return [int(i) for i in rng.permutation(len(self.windows))]

    def run(self, evaluate: Callable[[Params], dict[str, Any]] | None = None) -> None:
        started = time.perf_counter()
        tokens_at_start = self.tokens_seen
        while self.step < self.total_steps:
            epoch, index = divmod(self.step, len(self.windows))
            window = self.windows[self.order(epoch)[index]]
            (loss, count), grads = self._loss_and_grad(self.params, window)
            grads, _ = _clip_grad_norm(grads, self.settings.clip_norm)
            self.optimizer.update(self.params, grads)
            mx.eval(self.params, self.optimizer.state, loss, count)
            self.step += 1
            self.tokens_seen += window.length - self.settings.draft_steps
            rate = (self.tokens_seen - tokens_at_start) / (time.perf_counter() - started)
            entry: dict[str, Any] = {
                "step": self.step,
                "epoch": epoch,
                "loss": round(cast(float, loss.item()), 4),
                "tokens_seen": self.tokens_seen,
                "tokens_per_s": round(rate, 1),
            }
            self.history.append(entry)
            self.log(_progress_line(entry, self.total_steps))
            last = self.step == self.total_steps
            if self.step % self.settings.checkpoint_every == 0 or last:
                if evaluate is not None and (
                    last or self.step % (4 * self.settings.checkpoint_every) == 0
                ):
                    entry["eval"] = evaluate(self.params)
                    self.log(f"eval at step {self.step}: {json.dumps(entry['eval'])}")
                self.save_checkpoint()

    def save_checkpoint(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        arrays = {f"param/{k}": v for k, v in self.params.items()}
        for key, value in self.optimizer.state.items():
            if isinstance(value, dict):  # a parameter's moments: {"m": ..., "v": ...}
                arrays.update({f"moment/{moment}/{key}": v for moment, v in value.items()})
            else:  # step, learning_rate
                arrays[f"optim/{key}"] = value
        temporary = self.out_dir / "checkpoint.tmp.safetensors"
        mx.save_safetensors(str(temporary), arrays)
        temporary.replace(self.out_dir / "checkpoint.safetensors")
        state = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "history": self.history,
            "settings": asdict(self.settings),
        }
        (self.out_dir / "progress.json").write_text(json.dumps(state))

    def resume(self) -> bool:
        """Load the newest checkpoint in ``out_dir``; return whether there was one."""
        path = self.out_dir / "checkpoint.safetensors"
        progress = self.out_dir / "progress.json"
        if not path.exists() or not progress.exists():
            return False
        arrays = mx.load(str(path))
        if not isinstance(arrays, dict):
            raise ValueError(
                f"{path} does not contain named arrays; delete it to train from the start"
            )
        self.params = {k[len("param/") :]: v for k, v in arrays.items() if k.startswith("param/")}
        state: dict[str, Any] = {}
        for key, value in arrays.items():
            if key.startswith("optim/"):
                state[key[len("optim/") :]] = value
            elif key.startswith("moment/"):
                _, moment, name = key.split("/", 2)
                state.setdefault(name, {})[moment] = value
        self.optimizer.state = state
        saved = json.loads(progress.read_text())
        self.step, self.tokens_seen, self.history = (
            saved["step"],
            saved["tokens_seen"],
            saved["history"],
        )
        self.log(f"resumed at step {self.step} ({self.tokens_seen} tokens seen)")
        return True


def _progress_line(entry: dict[str, Any], total_steps: int) -> str:
    done = entry["step"] / total_steps
    bar = "#" * int(30 * done) + "." * (30 - int(30 * done))
    return (
        f"[{bar}] step {entry['step']}/{total_steps} loss {entry['loss']:.3f} "
        f"tokens {entry['tokens_seen']} ({entry['tokens_per_s']:.0f} tokens/s)"
    )


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))
