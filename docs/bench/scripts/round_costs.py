"""Run `draftwise bench` and log every speculative round: drafter, draft length, accepted, seconds.

python round_costs.py ROUNDS.jsonl BENCH-ARGUMENTS...

For example, the figures on the benchmark page came from

python round_costs.py rounds.jsonl bench --workload ../shared/workloads/dev.jsonl \
    --ids polyglot-go-alphametics,polyglot-java-transpose,polyglot-cpp-clock \
    --modes auto --draft qwen2.5-coder:1.5b-mtp --max-tokens 256 --out out

and the median seconds per (drafter, draft length) from ROUNDS.jsonl.
"""

import json
import sys

import draftwise.runtime  # noqa: F401  (first, so that OpenBLAS loads before mlx)
import draftwise.runtime.drafters.adaptive as adaptive
from draftwise.actors.cli import main

log = open(sys.argv[1], "w")
record = adaptive.AdaptiveTuner.record


def logged(self, num_drafted, num_accepted, seconds):
    name = self.drafter.active if num_drafted else "none"
    log.write(json.dumps([name, num_drafted, num_accepted, seconds]) + "\n")
    return record(self, num_drafted, num_accepted, seconds)


adaptive.AdaptiveTuner.record = logged
main(sys.argv[2:])
