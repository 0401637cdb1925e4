"""Measure an MTP drafter on held-out windows: accuracy per step and acceptance per position.

Acceptance at position ``j`` is the chance that draft ``j`` equals the
target's greedy choice given that drafts ``1 .. j-1`` did. A window's text
tells the target's choice after a draft only where the text itself follows
the target's greedy path, so position ``j`` counts an origin only where
tokens ``t+2 .. t+j`` equal the target's choices before them. On those
origins teacher forcing feeds exactly the tokens that drafting would.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, cast

import mlx.core as mx
import numpy as np

from draftwise.runtime.drafters.mtp_config import MTPConfig
from draftwise.runtime.drafters.mtp_model import Params, mtp_step
from draftwise.runtime.training.mtp_batches import Window, origin_mask


def window_predictions(
    config: MTPConfig,
    params: Params,
    head_rows: mx.array,
    window: Window,
    steps: int,
    candidate_ids: np.ndarray,
) -> np.ndarray:
    """Return the drafted token ids ``[steps, origins]`` under teacher forcing."""
    origins = window.length - steps
    mask = origin_mask(origins, window.length)
    state = window.hidden[:origins]
    predictions = []
    for step in range(1, steps + 1):
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
        predictions.append(mx.argmax(logits, axis=-1))
    stacked = mx.stack(predictions)
    mx.eval(stacked)
    return cast(np.ndarray, candidate_ids[np.array(stacked)])


def acceptance_counts(window: Window, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (reached, accepted) per position for one window."""
    steps, origins = predictions.shape
    tokens, choices = window.token_ids, window.target_ids
    reached = np.zeros(steps, dtype=np.int64)
    accepted = np.zeros(steps, dtype=np.int64)
    for t in range(origins):
        for j in range(1, steps + 1):
            # The text after the previous draft must be the target's own choice.
            if j > 1 and tokens[t + j] != choices[t + j - 1]:
                break
            reached[j - 1] += 1
            if predictions[j - 1, t] != choices[t + j]:
                break
            accepted[j - 1] += 1
    return reached, accepted


def evaluate(
    config: MTPConfig,
    params: Params,
    head_rows: mx.array,
    windows: list[Window],
    steps: int,
    candidate_ids: np.ndarray,
) -> dict[str, Any]:
    """Acceptance per position, overall and per category, and per-step accuracy."""
    reached: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(steps, dtype=np.int64))
    accepted: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(steps, dtype=np.int64))
    correct = np.zeros(steps)
    scored = 0
    for window in windows:
        predictions = window_predictions(config, params, head_rows, window, steps, candidate_ids)
        r, a = acceptance_counts(window, predictions)
        for key in ("all", window.category):
            reached[key] += r
            accepted[key] += a
        origins = predictions.shape[1]
        for j in range(1, steps + 1):
            correct[j - 1] += np.sum(predictions[j - 1] == window.target_ids[j : j + origins])
        scored += origins
    return {
        "acceptance_by_position": {
            key: [
                round(float(a / r), 4) if r else None
                for a, r in zip(accepted[key], reached[key], strict=True)
            ]
            for key in reached
        },
        "reached_by_position": {key: [int(r) for r in reached[key]] for key in reached},
        "step_accuracy": [round(float(c / max(scored, 1)), 4) for c in correct],
        "origins": scored,
    }
