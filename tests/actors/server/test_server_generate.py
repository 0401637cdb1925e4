"""Generate, stats, models, health and sessions through a real server and the real client."""

from __future__ import annotations

import trio

from draftwise.actors.server import UnixSocketServer
from draftwise.protocol import AsyncClient, Chunk, Client, Done, RemoteError

PROMPT = "alpha beta gamma delta epsilon zeta eta theta"


async def _collect(client: AsyncClient, **options: object) -> tuple[list[Chunk], Done]:
    stream = await client.generate(**options)
    chunks = []
    async for reply in stream:
        if isinstance(reply, Chunk):
            chunks.append(reply)
    assert stream.done is not None
    return chunks, stream.done


async def test_server_generate_streams_chunks(client: AsyncClient):
    chunks, done = await _collect(client, prompt=PROMPT, max_tokens=6)
    token_ids = [token for chunk in chunks for token in chunk.token_ids]
    assert len(chunks) >= 1
    assert len(token_ids) == done.usage.completion_tokens
    assert 1 <= done.usage.completion_tokens <= 6
    assert done.usage.prompt_tokens > 0
    assert done.session_id
    assert done.finish_reason in ("length", "eos")
    for chunk in chunks:
        assert chunk.request_id == done.request_id


async def test_server_generate_without_stream_sends_one_chunk(client: AsyncClient):
    chunks, done = await _collect(client, prompt=PROMPT, max_tokens=5, stream=False)
    assert len(chunks) == 1
    assert len(chunks[0].token_ids) == done.usage.completion_tokens


async def test_server_session_continues_and_closes(client: AsyncClient):
    _, first = await _collect(client, prompt=PROMPT, max_tokens=3)
    _, second = await _collect(
        client, prompt=PROMPT + " more", session_id=first.session_id, max_tokens=3
    )
    assert second.session_id == first.session_id
    reply = await client.close_session(first.session_id)
    assert reply.session_id == first.session_id
    try:
        await client.close_session(first.session_id)
    except RemoteError as error:
        assert error.code == "unknown_session"
    else:
        raise AssertionError("closing a closed session succeeded")


async def test_server_cancel_unknown_request_not_cancelled(client: AsyncClient):
    reply = await client.cancel("never-sent")
    assert reply.cancelled is False
    assert reply.target_request_id == "never-sent"


async def test_server_stats_models_health(client: AsyncClient):
    await _collect(client, prompt=PROMPT, max_tokens=3)
    stats = await client.stats()
    models = await client.models()
    health = await client.health()
    assert stats.finished_requests >= 1
    assert stats.active_requests == 0
    assert models.models
    assert client.welcome is not None
    assert client.welcome.models == [model.name for model in models.models]
    assert health.status == "ok"
    assert health.active_requests == 0


async def test_server_two_connections_four_requests_each(server: UnixSocketServer):
    results: dict[tuple[int, int], Done] = {}

    async def one_request(client: AsyncClient, connection: int, index: int) -> None:
        chunks, done = await _collect(client, prompt=f"{PROMPT} {connection} {index}", max_tokens=8)
        assert len([t for c in chunks for t in c.token_ids]) == done.usage.completion_tokens
        results[(connection, index)] = done

    async def one_connection(connection: int) -> None:
        async with await AsyncClient.connect(server.socket_path) as client:
            await client.hello(f"client-{connection}")
            async with trio.open_nursery() as nursery:
                for index in range(4):
                    nursery.start_soon(one_request, client, connection, index)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for connection in range(2):
                nursery.start_soon(one_connection, connection)

    assert sorted(results) == [(c, i) for c in range(2) for i in range(4)]
    assert len({done.session_id for done in results.values()}) == 8


async def test_server_blocking_client_generate(server: UnixSocketServer):
    def run_blocking() -> tuple[str, Done]:
        with Client.connect(server.socket_path, timeout=30) as client:
            client.hello("blocking")
            parts = []
            done = None
            for reply in client.generate(prompt=PROMPT, max_tokens=4, timeout=60):
                if isinstance(reply, Chunk):
                    parts.append(reply.text)
                else:
                    done = reply
            assert done is not None
            return "".join(parts), done

    text, done = await trio.to_thread.run_sync(run_blocking)
    assert done.usage.completion_tokens >= 1
    assert isinstance(text, str)
