"""Teacher-forced MTP drafts at every position of the target's own greedy outputs.

python mtp_drafts.py RESULTS.json OUT.npz

RESULTS.json is a `draftwise bench` record. For every plain run, the target
runs over the full prompt and its output. The shipped MTP drafter then drafts
4 steps from every origin, as it would live. Its inputs are the target's
hidden state at position t and the token at t + 1, then its own states. OUT.npz
holds, per prompt, the drafts ("ID/pred" [4, origins], origin 0 being the
prompt's second-to-last position) and the prompt length ("ID/start").
"""

import json
import sys

import draftwise.runtime  # noqa: F401  (first, so that OpenBLAS loads before mlx)
import mlx.core as mx
import numpy as np
from draftwise.runtime.drafters.mtp import gather_head_rows, output_head
from draftwise.runtime.drafters.mtp_catalogue import load_mtp_drafter
from draftwise.runtime.language_model import load_language_model
from draftwise.runtime.models.layers import linear
from draftwise.runtime.training.mtp_batches import window_from_features
from draftwise.runtime.training.mtp_eval import window_predictions
from draftwise.runtime.training.mtp_features import extract_window

language_model = load_language_model("qwen2.5-coder:1.5b")
target = language_model.model
weights = load_mtp_drafter("qwen2.5-coder:1.5b-mtp")
candidates = np.array(weights.candidate_ids).astype(np.int32)
head = gather_head_rows(output_head(target), mx.array(candidates).astype(mx.uint32))
workload = {json.loads(line)["id"]: json.loads(line) for line in open("../shared/workloads/dev.jsonl")}
record = json.load(open(sys.argv[1]))
layer = target.config.num_layers - 1
table = target.weights["token_embd.weight"]
out = {}
for run in record["runs"]:
    if run["mode"] != "plain":
        continue
    prompt_ids = language_model.encode_messages(workload[run["id"]]["messages"])
    features = extract_window(target, list(prompt_ids) + list(run["token_ids"]), layer)
    window = window_from_features(run["id"], run["category"], features, table)
    start = len(prompt_ids) - 2
    drafts = window_predictions(weights.config, weights.params, lambda x: linear(x, head), window, 4, candidates)
    out[run["id"] + "/pred"] = drafts[:, start:]
    out[run["id"] + "/start"] = np.array([start, len(prompt_ids)])
    print(run["id"], len(prompt_ids), flush=True)
np.savez(sys.argv[2], **out)
