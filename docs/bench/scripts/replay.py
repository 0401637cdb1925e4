"""Replay auto speculation (n-gram drafts, MTP drafts, plain rounds) over recorded outputs.

python replay.py DRAFTS.npz RESULTS.json

Greedy speculation commits exactly the plain output, so the rounds it would
run can be replayed without the target. The real `AdaptiveDrafter` and its
tuners choose a drafter and a draft length each round. The n-gram drafter
proposes from the real context, and the MTP drafter's proposals come from
DRAFTS.npz (`mtp_drafts.py`). Each round is charged the median round time
measured live for its draft length (`round_costs.py`). The result is the
tokens/s of auto against plain decoding per category. Knobs, as environment
variables: VERIFY_CUT_MS (taken off every round that verifies two rows or
more), MTP_FIRST_MS and MTP_STEP_MS (the MTP drafter's cost in a round),
MTP_BOOST (the share of wrong MTP proposals turned right, for what better
acceptance would buy).
"""

import collections
import json
import os
import random
import sys

import draftwise.runtime  # noqa: F401  (first, so that OpenBLAS loads before mlx)
import mlx.core as mx
import numpy as np
from draftwise.runtime.drafters.adaptive import AdaptiveDrafter
from draftwise.runtime.drafters.base import DraftProposal
from draftwise.runtime.drafters.ngram import NgramDrafter
from draftwise.runtime.language_model import load_language_model
from draftwise.runtime.sampling import SamplingParams

# Median round times in ms by rows verified (1 = a plain round), measured with
# round_costs.py on three polyglot prompts of 466 to 834 tokens. The MTP
# drafter adds about 3 ms to a one-token round and 1 ms per further token.
ROUND_MS = [0.0, 45.2, 51.9, 60.4, 66.0, 69.4, 74.4, 81.0, 87.0, 93.9]
CUT = float(os.environ.get("VERIFY_CUT_MS", 0))
MTP_FIRST = float(os.environ.get("MTP_FIRST_MS", 3.0))
MTP_STEP = float(os.environ.get("MTP_STEP_MS", 1.0))
BOOST = float(os.environ.get("MTP_BOOST", 0))


def round_ms(rows: int) -> float:
    return ROUND_MS[rows] - (CUT if rows > 1 else 0.0)


class RecordedMTP:
    """Drafter that proposes the MTP drafter's recorded drafts for the current origin."""

    name = "mtp"

    def __init__(self, drafts: np.ndarray, first_origin: int) -> None:
        self.drafts, self.first_origin = drafts, first_origin
        self.committed = 0

    def start(self, prompt_ids, prefiller=None) -> None:
        self.committed = len(prompt_ids)

    def propose(self, num_tokens, sampling, keys) -> DraftProposal:
        origin = self.committed - 2 - self.first_origin
        if origin >= self.drafts.shape[1]:
            return DraftProposal(mx.zeros((0,), dtype=mx.uint32), None)
        count = min(num_tokens, self.drafts.shape[0])
        return DraftProposal(mx.array(self.drafts[:count, origin].astype(np.uint32)), None)

    def commit(self, num_accepted, committed_ids) -> None:
        self.committed += len(committed_ids)


def main() -> None:
    drafts = np.load(sys.argv[1])
    record = json.load(open(sys.argv[2]))
    language_model = load_language_model("qwen2.5-coder:1.5b")
    workload = {
        json.loads(line)["id"]: json.loads(line) for line in open("../shared/workloads/dev.jsonl")
    }
    boost = random.Random(0)
    totals = collections.defaultdict(lambda: [0.0, 0.0])  # category -> [plain ms, auto ms]
    rounds = collections.Counter()
    for run in record["runs"]:
        if run["mode"] != "plain":
            continue
        out = run["token_ids"]
        prompt = language_model.encode_messages(workload[run["id"]]["messages"])
        first_origin = int(drafts[run["id"] + "/start"][0])
        drafter = AdaptiveDrafter(
            [NgramDrafter(), RecordedMTP(drafts[run["id"] + "/pred"], first_origin)], max_draft=8
        )
        drafter.start(list(prompt) + out[:1], None)
        done, spent = 1, 0.0
        while done < len(out):
            k = drafter.tuner.choose(len(out) - done - 1)
            proposal = [int(t) for t in drafter.propose(k, SamplingParams(), None).draft_token_ids.tolist()]
            mtp = drafter.active == "mtp" and proposal
            if mtp and BOOST:
                proposal = [
                    out[done + j] if p != out[done + j] and boost.random() < BOOST else p
                    for j, p in enumerate(proposal)
                ]
            accepted = 0
            while accepted < len(proposal) and proposal[accepted] == out[done + accepted]:
                accepted += 1
            ms = round_ms(len(proposal) + 1)
            if mtp:
                ms += MTP_FIRST + MTP_STEP * (len(proposal) - 1)
            rounds[drafter.active if proposal else "none"] += 1
            drafter.tuner.record(len(proposal), accepted, ms / 1000)
            drafter.commit(accepted, out[done : done + accepted + 1])
            done += accepted + 1
            spent += ms
        groups = [run["category"], "all"] + (["code"] if run["category"] != "chat" else [])
        for group in groups:
            totals[group][0] += (len(out) - 1) * ROUND_MS[1]
            totals[group][1] += spent
    print({group: round(plain / auto, 3) for group, (plain, auto) in sorted(totals.items())})
    print("rounds", dict(rounds))


main()
