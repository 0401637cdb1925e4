"""A byte-level client for sending malformed input to the server and reading its replies."""

from __future__ import annotations

import trio

from draftwise.protocol import (
    PROTOCOL_VERSION,
    FrameDecoder,
    Hello,
    Reply,
    decode_reply,
    encode_frame,
)


class RawPeer:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._decoder = FrameDecoder()

    @classmethod
    async def connect(cls, path: str) -> RawPeer:
        return cls(await trio.open_unix_socket(path))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_message(self, message: object) -> None:
        await self.send(encode_frame(message))

    async def hello(self) -> Reply:
        await self.send_message(Hello(protocol_version=PROTOCOL_VERSION, client_name="raw"))
        return await self.receive()

    async def receive(self) -> Reply:
        """Return the next reply; raise EOFError when the server closed the connection."""
        while True:
            body = self._decoder.next_frame()
            if body is not None:
                return decode_reply(body)
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("server closed the connection")
            self._decoder.feed(data)

    async def closed_by_server(self) -> bool:
        """Read until EOF; True when the server closed the connection."""
        try:
            while True:
                await self.receive()
        except EOFError:
            return True
        except trio.BrokenResourceError:
            return True

    async def aclose(self) -> None:
        await self.stream.aclose()
