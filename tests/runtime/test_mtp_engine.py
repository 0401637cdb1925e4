"""The MTP drafter through the engine, its weight file and its training loop."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from fakes import tiny_model
from test_engine import language_model, run
from test_mtp import random_mtp

from draftwise.runtime.drafters.mtp import MTPDrafter, MTPWeights, output_head
from draftwise.runtime.drafters.mtp_catalogue import SHIPPED, is_mtp_drafter, load_mtp_drafter
from draftwise.runtime.drafters.mtp_config import config_for_target
from draftwise.runtime.drafters.mtp_io import load_mtp, save_mtp
from draftwise.runtime.drafters.mtp_model import mtp_step, random_parameters
from draftwise.runtime.engine import Engine
from draftwise.runtime.errors import GenerationError
from draftwise.runtime.generate import fresh_prefill
from draftwise.runtime.training.mtp_batches import Window, load_windows
from draftwise.runtime.training.mtp_data import Document
from draftwise.runtime.training.mtp_eval import evaluate
from draftwise.runtime.training.mtp_features import extract_features
from draftwise.runtime.training.mtp_init import fit_projections, parameters_from_target
from draftwise.runtime.training.mtp_pipeline import dense_rows
from draftwise.runtime.training.mtp_train import Trainer, TrainSettings, window_loss
from draftwise.runtime.weights import QuantizedTensor


@pytest.mark.parametrize("drafter", ["auto", "mtp"])
@pytest.mark.parametrize("speculation", ["auto", 3])
def test_engine_mtp_matches_plain(drafter, speculation):
    target = language_model(1)
    engine = Engine(target, drafter=drafter, mtp=random_mtp(target.model))
    plain = run(engine, "def add(a, b):", "off")
    record = run(engine, "def add(a, b):", speculation)
    assert record.token_ids == plain.token_ids
    if drafter == "mtp":
        assert record.speculation is not None and record.speculation.num_drafted > 0


def test_engine_mtp_needs_weights():
    with pytest.raises(GenerationError, match="needs an MTP drafter"):
        Engine(language_model(1), drafter="mtp")


@pytest.mark.parametrize("bits", [8, None])
def test_mtp_file_round_trip(tmp_path, bits):
    model = tiny_model(seed=1)
    weights = random_mtp(model, candidates=50, seed=9)
    path = tmp_path / "drafter.safetensors"
    save_mtp(weights, path, bits=bits)
    loaded = load_mtp(path, quantized=False)
    assert loaded.config == weights.config
    assert np.array_equal(np.array(loaded.candidate_ids), np.array(weights.candidate_ids))
    tolerance = 0.05 if bits else 2e-3
    for name, value in weights.params.items():
        np.testing.assert_allclose(np.array(loaded.params[name]), np.array(value), atol=tolerance)
    assert is_mtp_drafter(path)
    assert load_mtp_drafter(path).config == weights.config


def test_mtp_quantized_drafting_matches_dequantized(tmp_path, monkeypatch):
    # Float32 kernel math, because this checks the stored 8-bit weights and
    # bf16 math would round the two sides differently.
    monkeypatch.setenv("DRAFTWISE_KERNEL_MATH", "f32")
    model = tiny_model(seed=1, hidden_size=128, intermediate_size=128)
    config = config_for_target(model.config, intermediate_size=128, candidate_vocab_size=96)
    weights = MTPWeights(config, random_parameters(config, 3), mx.arange(96))
    path = tmp_path / "drafter.safetensors"
    save_mtp(weights, path, bits=8)
    quantized = load_mtp(path)
    assert any(isinstance(v, QuantizedTensor) for v in quantized.params.values())
    plain = load_mtp(path, quantized=False)
    cache, _ = fresh_prefill(model, [3, 1, 4, 1, 5, 9, 2, 6], 10)
    logits = []
    for loaded in (quantized, plain):
        drafter = MTPDrafter(model, loaded)
        drafter.start([3, 1, 4, 1, 5, 9, 2, 6, 5])
        state = drafter._state
        keys, values = drafter._target_keys_values(cache)
        embeddings = mx.zeros((1, config.backbone_hidden_size))
        _, out = mtp_step(config, loaded.params, drafter._head, embeddings, state, keys, values, 8)
        logits.append(np.array(out))
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-3, rtol=1e-3)


def test_mtp_file_rejects_other_safetensors(tmp_path):
    path = tmp_path / "other.safetensors"
    mx.save_safetensors(str(path), {"x": mx.zeros((2,))})
    assert not is_mtp_drafter(path)
    with pytest.raises(ValueError, match="not an MTP drafter file"):
        load_mtp(path)


def test_shipped_drafter_matches_its_digest():
    for shipped in SHIPPED.values():
        if not shipped.path.is_file():
            pytest.skip(f"{shipped.path} is not built yet")
        weights = load_mtp_drafter(shipped.name)
        assert weights.config.target_name == shipped.target


def _features(tmp_path: Path, model) -> Path:
    rng = np.random.default_rng(0)
    documents = [
        Document(
            f"doc{i}",
            "eval" if i % 4 == 0 else "train",
            "x",
            [int(v) for v in rng.integers(0, 90, 48)],
        )
        for i in range(8)
    ]
    features = tmp_path / "features"
    stored = extract_features(model, documents, features, 1, 10_000, log=lambda _: None)
    assert stored == 8 * 48
    index = [json.loads(line) for line in (features / "index.jsonl").read_text().splitlines()]
    assert len(index) == 8
    # A second run finds every window stored and extracts nothing.
    again = extract_features(model, documents, features, 1, 10_000, log=pytest.fail)
    assert again == stored
    return features


def test_mtp_training_lowers_loss_and_resumes(tmp_path):
    model = tiny_model(seed=1)
    features = _features(tmp_path, model)
    candidates = np.arange(80, dtype=np.int32)
    config = config_for_target(model.config, intermediate_size=32, candidate_vocab_size=80)
    table = model.weights["token_embd.weight"]
    windows = load_windows(features, "train", table)
    head = dense_rows(output_head(model), candidates)
    settings = TrainSettings(epochs=8, learning_rate=3e-3, warmup_steps=4, checkpoint_every=8)
    trainer = Trainer(
        config,
        parameters_from_target(config, model, 0),
        head,
        windows,
        settings,
        tmp_path / "run",
        log=lambda _: None,
    )
    before = evaluate(config, trainer.params, head, windows, 3, candidates)
    trainer.run()
    after = evaluate(config, trainer.params, head, windows, 3, candidates)
    losses = [entry["loss"] for entry in trainer.history]
    assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:6])
    assert after["step_accuracy"][0] > before["step_accuracy"][0]

    resumed = Trainer(
        config,
        parameters_from_target(config, model, 1),
        head,
        windows,
        settings,
        tmp_path / "run",
        log=lambda _: None,
    )
    assert resumed.resume()
    assert resumed.step == trainer.step
    for name, value in trainer.params.items():
        assert mx.array_equal(resumed.params[name], value).item(), name


def test_mtp_pipeline_end_to_end(tmp_path, monkeypatch):
    from draftwise.runtime import language_model as language_model_module
    from draftwise.runtime.training import mtp_data, mtp_pipeline

    target = language_model(1)
    monkeypatch.setattr(language_model_module, "load_language_model", lambda name: target)
    source = tmp_path / "example.py"
    source.write_text("def add(a, b):\n    return a + b\n" * 20)

    def one_source(count: int, seed: int, suffixes: tuple[str, ...] = ()) -> list[Path]:
        return [source]

    monkeypatch.setattr(mtp_data, "list_source_files", one_source)
    monkeypatch.setattr(mtp_pipeline, "list_source_files", one_source)
    workload = tmp_path / "prompts.jsonl"
    lines = [
        {
            "id": f"p{i}",
            "category": "polyglot",
            "messages": [
                {"role": "user", "content": f"def f{i}(x):\n    return x * {i} + 1\n" * 3}
            ],
        }
        for i in range(5)
    ]
    workload.write_text("\n".join(json.dumps(line) for line in lines))
    settings = mtp_pipeline.PipelineSettings(
        target="tiny",
        out_dir=tmp_path / "out",
        extract_tokens=10_000,
        window=40,
        candidates=60,
        intermediate_size=32,
        workload=workload,
        train=TrainSettings(epochs=2, learning_rate=1e-3, checkpoint_every=4),
    )
    report = mtp_pipeline.run_pipeline(settings, log=lambda _: None)
    assert report["eval_windows"] == 2
    assert report["train_windows"] == 4
    assert len(report["after"]["acceptance_by_position"]["all"]) == mtp_pipeline.EVAL_POSITIONS
    assert (tmp_path / "out" / "loss.png").stat().st_size > 0
    weights = load_mtp_drafter(tmp_path / "out" / "drafter.safetensors")
    # Only tokens seen in the corpus or the target's choices become candidates.
    assert 0 < weights.config.candidate_vocab_size <= 60


def _linear_windows(config, matrix: np.ndarray, count: int, length: int) -> list[Window]:
    """Windows whose next hidden state is exactly ``matrix @ [embedding, hidden]``."""
    rng = np.random.default_rng(3)
    width = config.backbone_hidden_size
    windows = []
    for number in range(count):
        embeddings = rng.normal(size=(length, width)).astype(np.float32)
        hidden = np.zeros((length, width), dtype=np.float32)
        hidden[0] = rng.normal(size=width)
        for t in range(1, length):
            hidden[t] = matrix @ np.concatenate([embeddings[t], hidden[t - 1]])
        kv = mx.zeros((config.num_key_value_heads, length, config.head_dim))
        windows.append(
            Window(
                f"w{number}",
                "x",
                np.zeros(length, dtype=np.int32),
                np.zeros(length, dtype=np.int32),
                mx.array(embeddings),
                mx.array(hidden),
                kv,
                kv,
            )
        )
    return windows


def _next_state_matrix(width: int, seed: int) -> np.ndarray:
    """A map ``[embedding, hidden] -> hidden`` that keeps the states bounded."""
    rng = np.random.default_rng(seed)
    from_embedding = rng.normal(size=(width, width)) / np.sqrt(width)
    rotation, _ = np.linalg.qr(rng.normal(size=(width, width)))
    return np.concatenate([from_embedding, 0.5 * rotation], axis=1).astype(np.float32)


def test_fit_projections_recovers_a_linear_next_state():
    model = tiny_model(seed=1)
    config = config_for_target(model.config, intermediate_size=32, candidate_vocab_size=80)
    matrix = _next_state_matrix(config.backbone_hidden_size, 4)
    windows = _linear_windows(config, matrix, count=4, length=64)
    params = fit_projections(config, parameters_from_target(config, model, 0), windows, 1e-4)
    fitted = np.array(params["pre_projection.weight"])
    assert np.abs(fitted - matrix).max() < 1e-3


def test_fitted_drafter_predicts_the_next_state():
    model = tiny_model(seed=1)
    config = config_for_target(model.config, intermediate_size=32, candidate_vocab_size=80)
    width = config.backbone_hidden_size
    matrix = _next_state_matrix(width, 5)
    windows = _linear_windows(config, matrix, count=4, length=64)
    params = fit_projections(config, parameters_from_target(config, model, 0), windows, 1e-4)
    window = windows[0]
    head = dense_rows(output_head(model), np.arange(80, dtype=np.int32))
    _, logits = mtp_step(
        config,
        params,
        head,
        window.embeddings[1:],
        window.hidden[:-1],
        window.keys,
        window.values,
        1,
    )
    expected = mx.argmax(window.hidden[1:] @ head.T, axis=-1)
    assert mx.mean(mx.argmax(logits, axis=-1) == expected).item() > 0.95


def test_window_loss_lower_after_fitting():
    model = tiny_model(seed=1)
    config = config_for_target(model.config, intermediate_size=32, candidate_vocab_size=80)
    width = config.backbone_hidden_size
    matrix = _next_state_matrix(width, 6)
    window = _linear_windows(config, matrix, count=1, length=48)[0]
    head = dense_rows(output_head(model), np.arange(80, dtype=np.int32))
    start = parameters_from_target(config, model, 0)
    fitted = fit_projections(config, start, [window], 1e-4)
    fitted_loss, count = window_loss(config, fitted, head, window, 1)
    start_loss, _ = window_loss(config, start, head, window, 1)
    assert count.item() == 47
    assert fitted_loss.item() < start_loss.item()
