"""Health, Prometheus metrics and the API-key check."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from http_fakes import MODEL, get, in_thread, post, running_gateway
from prometheus_client.parser import text_string_to_metric_families

from draftwise.actors.http.metrics import GatewayMetrics


async def test_health_reports_ok_and_models():
    async with running_gateway() as gateway:
        status, raw = await in_thread(get, gateway.base_url + "/health")

    body = json.loads(raw)
    assert status == 200
    assert body["status"] == "ok"
    assert body["models"] == [MODEL]
    assert body["active_requests"] == 0


async def test_metrics_parse_and_count_requests():
    async with running_gateway() as gateway:
        api = openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=60)
        response = await in_thread(
            api.chat.completions.create,
            model=MODEL,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=20,
        )
        await in_thread(post, gateway.v1 + "/chat/completions", {"model": "nope", "messages": []})
        status, raw = await in_thread(get, gateway.base_url + "/metrics")

    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(raw.decode())}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    model = (("model", MODEL),)
    assert samples[("draftwise_generated_tokens_total", model)] == response.usage.completion_tokens
    assert samples[("draftwise_prompt_tokens_total", model)] == response.usage.prompt_tokens
    assert ("draftwise_drafted_tokens_total", model) in samples
    assert ("draftwise_accepted_tokens_total", model) in samples
    assert samples[("draftwise_generation_seconds_total", model)] > 0
    ok = (("endpoint", "/v1/chat/completions"), ("status", "200"))
    rejected = (("endpoint", "/v1/chat/completions"), ("status", "400"))
    assert samples[("draftwise_http_requests_total", ok)] == 1
    assert samples[("draftwise_http_requests_total", rejected)] == 1
    assert families["draftwise_time_to_first_token_seconds"].type == "histogram"
    assert samples[("draftwise_time_to_first_token_seconds_count", ())] == 1
    assert samples[("draftwise_time_to_first_token_seconds_bucket", (("le", "+Inf"),))] == 1
    assert samples[("draftwise_active_requests", ())] == 0
    assert samples[("draftwise_sessions", ())] == 1
    assert samples[("draftwise_cache_bytes", ())] > 0
    assert ("draftwise_draft_length", model) in samples


def test_metrics_render_escapes_labels():
    metrics = GatewayMetrics()
    metrics.record_http('/v1/"odd"\\path\n', 200)
    text = metrics.render({"draft_length": {'a"b': 2.5}})

    families = {family.name: family for family in text_string_to_metric_families(text)}
    labels = [sample.labels for sample in families["draftwise_http_requests"].samples]
    assert labels == [{"endpoint": '/v1/"odd"\\path\n', "status": "200"}]
    assert families["draftwise_draft_length"].samples[0].labels == {"model": 'a"b'}


@pytest.mark.parametrize("path", ["/v1/models", "/health", "/metrics"])
async def test_api_key_required_on_every_path(path):
    async with running_gateway(api_key="secret") as gateway:
        missing = await in_thread(get, gateway.base_url + path)
        wrong = await in_thread(get, gateway.base_url + path, {"authorization": "Bearer nope"})
        bearer = await in_thread(get, gateway.base_url + path, {"authorization": "Bearer secret"})
        header = await in_thread(get, gateway.base_url + path, {"x-api-key": "secret"})

    assert missing[0] == 401
    assert json.loads(missing[1])["error"]["type"] == "authentication_error"
    assert wrong[0] == 401
    assert bearer[0] == 200
    assert header[0] == 200


async def test_api_key_with_official_clients():
    async with running_gateway(api_key="secret") as gateway:
        good = openai.OpenAI(base_url=gateway.v1, api_key="secret", max_retries=0, timeout=60)
        bad = openai.OpenAI(base_url=gateway.v1, api_key="wrong", max_retries=0, timeout=60)
        claude = anthropic.Anthropic(
            base_url=gateway.base_url, api_key="secret", max_retries=0, timeout=60
        )
        models = await in_thread(good.models.list)
        with pytest.raises(openai.AuthenticationError):
            await in_thread(bad.models.list)
        message = await in_thread(
            claude.messages.create,
            model=MODEL,
            max_tokens=5,
            messages=[{"role": "user", "content": "hi"}],
        )
        status, raw = await in_thread(
            post,
            gateway.base_url + "/v1/messages",
            {"model": MODEL, "max_tokens": 5, "messages": []},
            {"x-api-key": "wrong"},
        )

    assert [m.id for m in models.data] == [MODEL]
    assert message.usage.output_tokens > 0
    assert status == 401
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": "authentication_error", "message": json.loads(raw)["error"]["message"]},
    }
