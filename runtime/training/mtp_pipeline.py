"""`train-drafter` end to end: features, candidates, initialisation, training, export.

Every stage leaves its result in the output folder and is skipped when the
result is already there, so rerunning the same command resumes:

    OUT/features/          target features (`mtp_features`), one shard per window
    OUT/candidates.npy     the candidate vocabulary
    OUT/checkpoint.*, OUT/progress.json   training state (`mtp_train`)
    OUT/drafter.safetensors, OUT/drafter.sha256, OUT/report.json, OUT/loss.png
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from draftwise.runtime.drafters.mtp import MTPWeights, gather_head_rows, output_head
from draftwise.runtime.drafters.mtp_config import config_for_target
from draftwise.runtime.drafters.mtp_io import save_mtp
from draftwise.runtime.store.files import sha256_of_file
from draftwise.runtime.training.mtp_batches import load_windows, target_choices
from draftwise.runtime.training.mtp_data import (
    SOURCE_SUFFIXES,
    iter_documents,
    list_source_files,
)
from draftwise.runtime.training.mtp_eval import evaluate
from draftwise.runtime.training.mtp_features import extract_features
from draftwise.runtime.training.mtp_init import (
    choose_candidates,
    count_tokens,
    dense,
    fit_projections,
    parameters_from_target,
)
from draftwise.runtime.training.mtp_train import Trainer, TrainSettings

EVAL_POSITIONS = 4


@dataclass(frozen=True)
class PipelineSettings:
    """Settings of what to extract and how large a drafter to build.

    ``train`` contains the optimiser's settings.
    """

    target: str
    out_dir: Path
    features_dir: Path | None = None
    extract_tokens: int = 20000
    window: int = 256
    max_sources: int = 400
    source_suffixes: tuple[str, ...] = SOURCE_SUFFIXES
    candidates: int = 4096
    intermediate_size: int = 1536
    num_hidden_layers: int = 1
    ridge: float = 1.0
    workload: Path | None = None
    train: TrainSettings = field(default_factory=TrainSettings)

    @property
    def features(self) -> Path:
        return self.features_dir or self.out_dir / "features"


def run_pipeline(settings: PipelineSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage not yet done and return the report."""
    from draftwise.runtime.language_model import load_language_model

    started = time.perf_counter()
    language_model = load_language_model(settings.target)
    target = language_model.model
    mx.random.seed(settings.train.seed)
    layer = target.config.num_layers - 1
    if settings.extract_tokens > 0:
        documents = iter_documents(
            language_model,
            settings.window,
            settings.max_sources,
            settings.train.seed,
            settings.workload,
            settings.source_suffixes,
        )
        extract_features(target, documents, settings.features, layer, settings.extract_tokens, log)

    candidate_ids = _candidates(settings, language_model, log)
    config = config_for_target(
        target.config,
        num_hidden_layers=settings.num_hidden_layers,
        intermediate_size=settings.intermediate_size,
        candidate_vocab_size=len(candidate_ids),
        rope_traditional=target.traditional_rope,
        target_name=settings.target,
    )
    table = target.weights["token_embd.weight"]
    head_rows = dense_rows(output_head(target), candidate_ids)
    train_windows = load_windows(settings.features, "train", table)
    eval_windows = load_windows(settings.features, "eval", table)
    log(f"{len(train_windows)} training windows, {len(eval_windows)} held-out windows")
    coverage = candidate_coverage(eval_windows or train_windows, candidate_ids)
    log(f"candidates cover {coverage:.3f} of the target's held-out choices")

    params = fit_projections(
        config,
        parameters_from_target(config, target, settings.train.seed),
        train_windows,
        settings.ridge,
    )
    # Positions past the trained steps are measured too: drafting chains on.
    steps = max(settings.train.draft_steps, EVAL_POSITIONS)

    def measure(current: Any) -> dict[str, Any]:
        return evaluate(config, current, head_rows, eval_windows, steps, candidate_ids)

    initial = measure(params)
    log(f"before training: {json.dumps(initial)}")
    trainer = Trainer(
        config, params, head_rows, train_windows, settings.train, settings.out_dir, log
    )
    trainer.resume()
    trainer.run(measure)
    final = measure(trainer.params)

    weights = MTPWeights(config, trainer.params, mx.array(candidate_ids))
    drafter_path = settings.out_dir / "drafter.safetensors"
    save_mtp(weights, drafter_path)
    digest = sha256_of_file(drafter_path)
    (settings.out_dir / "drafter.sha256").write_text(f"{digest}  drafter.safetensors\n")
    report = {
        "target": settings.target,
        "config": config.to_json(),
        "settings": {k: str(v) for k, v in asdict(settings).items() if k != "train"},
        "train": asdict(settings.train),
        "train_windows": len(train_windows),
        "train_tokens": sum(w.length for w in train_windows),
        "eval_windows": len(eval_windows),
        "eval_tokens": sum(w.length for w in eval_windows),
        "candidate_coverage": round(coverage, 4),
        "tokens_seen": trainer.tokens_seen,
        "steps": trainer.step,
        "wall_s_this_run": round(time.perf_counter() - started, 1),
        "before": initial,
        "after": final,
        "drafter_bytes": drafter_path.stat().st_size,
        "drafter_sha256": digest,
    }
    (settings.out_dir / "report.json").write_text(json.dumps(report, indent=1))
    plot_losses(trainer.history, settings.out_dir / "loss.png")
    log(f"drafter written to {drafter_path} ({report['drafter_bytes']} bytes, sha256 {digest})")
    return report


def candidate_coverage(windows: list[Any], candidate_ids: np.ndarray) -> float:
    """Return the fraction of the target's choices in ``windows`` that are candidates."""
    choices = np.concatenate([w.target_ids for w in windows]) if windows else np.zeros(0)
    return float(np.isin(choices, candidate_ids).mean()) if len(choices) else 0.0


def dense_rows(head: Any, candidate_ids: np.ndarray) -> mx.array:
    """Return the output-head rows of ``candidate_ids`` as a float32 matrix."""
    result = dense(gather_head_rows(head, mx.array(candidate_ids)))
    mx.eval(result)
    return result


def _candidates(
    settings: PipelineSettings, language_model: Any, log: Callable[[str], None]
) -> np.ndarray:
    path = settings.out_dir / "candidates.npy"
    if path.exists():
        stored = np.load(path)
        if not isinstance(stored, np.ndarray):
            raise ValueError(
                f"{path} does not contain one array of candidate token ids; "
                "delete it to choose the candidates again"
            )
        return stored
    files = list_source_files(settings.max_sources, settings.train.seed + 1)
    counts = count_tokens(language_model.tokenizer, files, max_chars=50_000)
    always = sorted(language_model.tokenizer.eos_token_ids)
    candidate_ids = choose_candidates(
        counts, target_choices(settings.features), settings.candidates, always
    )
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, candidate_ids)
    log(f"candidate vocabulary: {len(candidate_ids)} tokens from {len(files)} files")
    return candidate_ids


def plot_losses(history: list[dict[str, Any]], path: Path) -> None:
    """Write the training loss (and held-out first-position acceptance) against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    figure, axis = plt.subplots(figsize=(7, 4))
    tokens = [entry["tokens_seen"] for entry in history]
    axis.plot(
        tokens, [entry["loss"] for entry in history], color="tab:blue", alpha=0.5, label="loss"
    )
    axis.set_xlabel("tokens seen (origins)")
    axis.set_ylabel("cross-entropy against the target, per draft step")
    evaluated = [entry for entry in history if "eval" in entry]
    if evaluated:
        other = axis.twinx()
        other.plot(
            [entry["tokens_seen"] for entry in evaluated],
            [entry["eval"]["acceptance_by_position"]["all"][0] for entry in evaluated],
            color="tab:red",
            marker="o",
            label="held-out acceptance, position 1",
        )
        other.set_ylabel("acceptance")
    figure.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
