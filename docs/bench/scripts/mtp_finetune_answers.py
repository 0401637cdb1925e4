"""Fine-tune the MTP drafter on windows of the target's own responses (answers).

python mtp_finetune_answers.py ANSWERS.json FEATURES_DIR CHECKPOINT OUT_DIR

ANSWERS.json comes from mtp_answers.py. Each answer gives one 256-token
window: the last 32 prompt tokens and the answer's first 224. Training starts
from the parameters in CHECKPOINT (a `train-drafter` checkpoint) with a fresh
optimiser, and runs 2 epochs over the answer windows, each three times, mixed
with 120 training windows drawn from FEATURES_DIR (seed 0), at learning rate
3e-5 and 2 draft steps per origin. Before and after, it prints first-position
acceptance on the answers to the first 20 prompts of dev.jsonl in a
`draftwise bench` record (BENCH env, default the record named below), which no
training step saw, and acceptance per position on FEATURES_DIR's held-out
windows. It writes OUT_DIR/drafter.safetensors (8-bit).
"""

import json
import os
import sys
import time
from pathlib import Path

import draftwise.runtime  # noqa: F401  (first, so that OpenBLAS loads before mlx)
import mlx.core as mx
import numpy as np
from draftwise.runtime.drafters.mtp import MTPWeights, output_head
from draftwise.runtime.drafters.mtp_catalogue import load_mtp_drafter
from draftwise.runtime.drafters.mtp_io import save_mtp
from draftwise.runtime.language_model import load_language_model
from draftwise.runtime.training.mtp_batches import Window, load_windows, window_from_features
from draftwise.runtime.training.mtp_eval import evaluate, window_predictions
from draftwise.runtime.training.mtp_features import extract_window
from draftwise.runtime.training.mtp_pipeline import dense_rows
from draftwise.runtime.training.mtp_train import Trainer, TrainSettings

BENCH = os.environ.get("BENCH", "docs/bench/zen4-stream-prefetch-mtp-workload-20.json")
answers_path, features, checkpoint, out_dir = (Path(a) for a in sys.argv[1:5])
started = time.time()
language_model = load_language_model("qwen2.5-coder:1.5b")
target = language_model.model
layer = target.config.num_layers - 1
table = target.weights["token_embd.weight"]
shipped = load_mtp_drafter("qwen2.5-coder:1.5b-mtp")
config = shipped.config
candidates = np.array(shipped.candidate_ids).astype(np.int32)
head_rows = dense_rows(output_head(target), candidates)


def window(name: str, category: str, token_ids: list[int]) -> Window:
    return window_from_features(name, category, extract_window(target, token_ids, layer), table)


answer_windows = []
for answer in json.loads(answers_path.read_text()):
    start = len(answer["prompt_ids"]) - 32
    ids = (answer["prompt_ids"] + answer["token_ids"])[start : start + 256]
    answer_windows.append(window(answer["id"], answer["category"], ids))
workload = {json.loads(line)["id"]: json.loads(line) for line in open("../shared/workloads/dev.jsonl")}
unseen = []
for run in json.load(open(BENCH))["runs"]:
    if run["mode"] == "plain":
        prompt = language_model.encode_messages(workload[run["id"]]["messages"])
        unseen.append(window(run["id"], run["category"], list(prompt[-256:]) + run["token_ids"]))
old = load_windows(features, "train", table)
held_out = load_windows(features, "eval", table)


def on_answers(params) -> dict[str, float]:
    """Return first-position acceptance at the origins whose input token is generated text."""
    counts: dict[str, list[int]] = {}
    for w in unseen:
        drafts = window_predictions(config, params, head_rows, w, 2, candidates)
        origins = drafts.shape[1] - 255
        right = drafts[0, 255:] == w.target_ids[256 : 256 + origins]
        for key in ("all", w.category):
            entry = counts.setdefault(key, [0, 0])
            entry[0] += int(right.sum())
            entry[1] += origins
    return {key: round(a / n, 4) for key, (a, n) in counts.items()}


def report(label: str, params) -> None:
    positions = evaluate(config, params, head_rows, held_out, 4, candidates)
    print(label, "answers", on_answers(params), "held-out prompts",
          positions["acceptance_by_position"]["all"], f"({time.time() - started:.0f}s)", flush=True)


arrays = mx.load(str(checkpoint))
params = {k[len("param/") :]: v for k, v in arrays.items() if k.startswith("param/")}
report("before", params)
rng = np.random.default_rng(0)
mix = answer_windows * 3 + [old[i] for i in rng.choice(len(old), size=120, replace=False)]
settings = TrainSettings(draft_steps=2, epochs=2, learning_rate=3e-5, seed=0, checkpoint_every=10_000)
trainer = Trainer(config, params, head_rows, mix, settings, out_dir, log=lambda line: None)
trainer.run()
print(f"{trainer.step} steps, {trainer.tokens_seen} origin-tokens", flush=True)
report("after", trainer.params)
save_mtp(MTPWeights(config, trainer.params, mx.array(candidates)), out_dir / "drafter.safetensors")
