"""Generate the target's greedy responses to the training prompts of dev.jsonl.

python mtp_answers.py OUT.json

The prompts are those of ../shared/workloads/dev.jsonl from the 21st on that
`train-drafter` does not hold out (it holds out every fourth prompt), so the
benchmark's first 20 prompts and the held-out ones stay unseen. Each response
is generated with auto speculation, which gives exactly the plain greedy
output, and is at most 320 tokens long.
"""

import json
import sys
import time
from pathlib import Path

import draftwise.runtime  # noqa: F401  (first, so that OpenBLAS loads before mlx)
from draftwise.actors.bench_workload import read_workload
from draftwise.actors.cli import load_engine
from draftwise.runtime.engine import GenerationRecord, parse_speculation
from draftwise.runtime.generate import GenerationParams, PrefixCachePrefiller
from draftwise.runtime.language_model import load_language_model
from draftwise.runtime.training.mtp_data import HELD_OUT_EVERY

rows = read_workload(Path("../shared/workloads/dev.jsonl"), None, None)
rows = [row for i, row in enumerate(rows) if i >= 20 and i % HELD_OUT_EVERY != 0]
target = load_language_model("qwen2.5-coder:1.5b")
engine = load_engine(target, "qwen2.5-coder:1.5b-mtp", "auto", None, None)
prefiller = PrefixCachePrefiller(capacity=2)
answers = []
for row in rows:
    started = time.time()
    prompt_ids = target.encode_messages(row["messages"])
    record = GenerationRecord()
    params = GenerationParams(max_tokens=320)
    for _ in engine.generate(prompt_ids, params, parse_speculation("auto"), record, prefiller):
        pass
    answers.append(
        {
            "id": row["id"],
            "category": row["category"],
            "prompt_ids": prompt_ids,
            "token_ids": record.token_ids,
        }
    )
    print(row["id"], len(prompt_ids), len(record.token_ids), f"{time.time() - started:.1f}s")
    Path(sys.argv[1]).write_text(json.dumps(answers))
