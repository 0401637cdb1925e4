"""How many output-head rows a lossless 4-bit screen would leave for the 8-bit head to score.

python head_screen.py

The 8-bit head is requantized to 4 bits (groups of 32, float16 scales). For
each of the last 300 positions of the first 6 workload prompts, every row's
4-bit logit gets a bound on its error: per group, the largest weight
difference times (sum of |x| + 16 int8 steps of x), plus the bias difference
times 16 int8 steps. A row stays a candidate when its 4-bit logit plus its
bound reaches the best 4-bit logit minus that row's bound.
"""

import json

import draftwise.runtime  # noqa: F401  (first, so that OpenBLAS loads before mlx)
import mlx.core as mx
import numpy as np
from draftwise.runtime.drafters.mtp import output_head
from draftwise.runtime.language_model import load_language_model

language_model = load_language_model("qwen2.5-coder:1.5b")
model = language_model.model
head = output_head(model)
rows, width = head.shape
groups = width // 32
exact = mx.dequantize(
    head.weight, head.scales.astype(mx.float32), head.biases.astype(mx.float32), group_size=32, bits=8
)
q4, s4, b4 = mx.quantize(exact, group_size=32, bits=4)
s4, b4 = s4.astype(mx.float16).astype(mx.float32), b4.astype(mx.float16).astype(mx.float32)
screen = mx.dequantize(q4, s4, b4, group_size=32, bits=4)
weight_error = mx.max(mx.abs(exact - screen).reshape(rows, groups, 32), axis=-1)
bias_error = mx.abs(head.biases.astype(mx.float32) - b4)
mx.eval(screen, weight_error, bias_error)
counts = []
for line in open("../shared/workloads/dev.jsonl").readlines()[:6]:
    ids = language_model.encode_messages(json.loads(line)["messages"])[-300:]
    hidden = model(mx.array(ids, dtype=mx.uint32), model.make_cache(), return_hidden=True).hidden
    approx = hidden @ screen.T
    step = mx.max(mx.abs(hidden).reshape(-1, groups, 32), axis=-1) / 127
    bound = (mx.abs(hidden).reshape(-1, groups, 32).sum(-1) + 16 * step) @ weight_error.T
    bound = bound + (16 * step) @ bias_error.T
    floor = mx.max(approx - bound, axis=-1, keepdims=True)
    counts += np.array(((approx + bound) >= floor).sum(-1)).tolist()
print("candidates per position: median", np.median(counts), "min", min(counts), "max", max(counts))
