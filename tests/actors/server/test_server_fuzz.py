"""Arbitrary bytes on many connections never stop the server from serving a healthy client."""

from __future__ import annotations

import msgspec
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_fakes import FakeRuntime

from draftwise.actors.server import serve
from draftwise.protocol import AsyncClient, Hello, encode_frame

HELLO_FRAME = encode_frame(Hello(protocol_version=1, client_name="fuzz"))

frame_bodies = st.one_of(
    st.binary(max_size=64),
    st.dictionaries(
        st.sampled_from(["type", "request_id", "prompt", "max_tokens", "sampling", "stream"]),
        st.one_of(
            st.sampled_from(["generate_request", "stats_request", "cancel_request", "hello"]),
            st.integers(-(2**40), 2**40),
            st.text(max_size=12),
            st.none(),
        ),
        max_size=5,
    ).map(msgspec.msgpack.encode),
)
byte_streams = st.lists(
    st.one_of(
        frame_bodies.map(lambda body: len(body).to_bytes(4, "big") + body),
        st.binary(max_size=32),
    ),
    max_size=6,
).map(b"".join)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=byte_streams)
async def test_server_fuzzed_bytes_keep_serving(data: bytes, socket_dir):
    # Reusing socket_dir across examples is safe: each server removes its socket on exit.
    runtime = FakeRuntime()
    path = str(socket_dir / "fuzz.sock")
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve(runtime, path, handle_signals=False, task_status=task_status)
        )
        with trio.fail_after(30):
            stream = await trio.open_unix_socket(path)
            try:
                await stream.send_all(HELLO_FRAME + data)
                await stream.send_eof()
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass
            finally:
                await stream.aclose()

            async with await AsyncClient.connect(path) as client:
                await client.hello("healthy")
                text, done = await (await client.generate(prompt="still here")).collect()
        assert text == "still here "
        assert done.finish_reason == "eos"
        server.shutdown(drain=False)
