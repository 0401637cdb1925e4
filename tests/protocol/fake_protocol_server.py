"""A scripted server that speaks the draftwise protocol over a Unix socket, for client tests.

Its "model" returns the words of the prompt (or of the last chat message) as
chunks, one word per chunk. A few prompts trigger scripted behaviour:

- "hold": send one chunk, then wait until the request is cancelled.
- "fail": send one chunk, then an ErrorReply with code "internal".
- "garble": send a Chunk with an invalid token id, then wait until cancelled.
- "kill": send a zero-length frame, then close the connection.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import trio

from draftwise.protocol import (
    PROTOCOL_VERSION,
    CancelReply,
    CancelRequest,
    Chunk,
    CloseSessionReply,
    CloseSessionRequest,
    Done,
    ErrorCode,
    ErrorReply,
    FrameDecoder,
    GenerateRequest,
    HealthReply,
    HealthRequest,
    Hello,
    ModelInfo,
    ModelsReply,
    ModelsRequest,
    ProtocolError,
    Reply,
    Request,
    RoundStats,
    SpeculationSummary,
    StatsReply,
    StatsRequest,
    Usage,
    Welcome,
    decode_request,
    encode_frame,
)

MODEL_NAME = "fake-target"


@dataclass
class _Job:
    request: GenerateRequest
    session_id: str
    pieces: list[str]
    cancelled: trio.Event = field(default_factory=trio.Event)


@dataclass
class _Connection:
    stream: trio.SocketStream
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    greeted: bool = False
    jobs: dict[str, _Job] = field(default_factory=dict)
    batch: list[_Job] = field(default_factory=list)


class FakeServer:
    """Replies to every request type and records what it received and sent, in wire order.

    `batch_size` generate requests are collected before any is streamed, and a
    batch is streamed round-robin, one chunk per request in turn, so tests can
    check that one connection carries interleaved streams. `answer_health`
    False leaves HealthRequests unanswered, for timeout tests, and
    `protocol_version` sets the only version the server accepts in Hello.
    """

    def __init__(self, path: str, *, batch_size: int = 1) -> None:
        self.path = path
        self.batch_size = batch_size
        self.answer_health = True
        self.protocol_version = PROTOCOL_VERSION
        self.received: list[Request] = []
        self.sent: list[Reply] = []
        self.sessions: set[str] = set()
        self._next_session = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listen_socket = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await listen_socket.bind(self.path)
        listen_socket.listen()
        listener = trio.SocketListener(listen_socket)
        task_status.started()
        await trio.serve_listeners(self._serve_connection, [listener])

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        connection = _Connection(stream)
        decoder = FrameDecoder()
        async with stream, trio.open_nursery() as nursery:
            try:
                await self._receive_requests(connection, decoder, nursery)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                # The "kill" script closed the stream, or the client went away.
                pass
            nursery.cancel_scope.cancel()

    async def _receive_requests(
        self, connection: _Connection, decoder: FrameDecoder, nursery: trio.Nursery
    ) -> None:
        while data := await connection.stream.receive_some(65536):
            try:
                decoder.feed(data)
                for body in decoder.frames():
                    await self._on_body(body, connection, nursery)
            except ProtocolError as exc:
                error = ErrorReply(request_id=None, code=exc.code, message=exc.message)
                await self._send(connection, error)
                return

    async def _on_body(self, body: bytes, connection: _Connection, nursery: trio.Nursery) -> None:
        try:
            request = decode_request(body)
        except ProtocolError as exc:
            if exc.code == ErrorCode.BAD_FRAME:
                raise
            error = ErrorReply(request_id=exc.request_id, code=exc.code, message=exc.message)
            await self._send(connection, error)
            return
        self.received.append(request)

        if isinstance(request, Hello):
            await self._on_hello(request, connection)
        elif not connection.greeted:
            message = "send hello before any other request"
            await self._send(
                connection,
                ErrorReply(
                    request_id=request.request_id, code=ErrorCode.HELLO_REQUIRED, message=message
                ),
            )
        elif isinstance(request, GenerateRequest):
            await self._on_generate(request, connection, nursery)
        elif isinstance(request, CancelRequest):
            job = connection.jobs.get(request.target_request_id)
            if job is not None:
                job.cancelled.set()
            reply = CancelReply(
                request_id=request.request_id,
                target_request_id=request.target_request_id,
                cancelled=job is not None,
            )
            await self._send(connection, reply)
        elif isinstance(request, CloseSessionRequest):
            await self._on_close_session(request, connection)
        elif isinstance(request, StatsRequest):
            await self._send(connection, self._stats(request.request_id, connection))
        elif isinstance(request, ModelsRequest):
            model = ModelInfo(
                name=MODEL_NAME,
                role="target",
                architecture="fake",
                context_length=4096,
                vocab_size=100,
            )
            await self._send(connection, ModelsReply(request_id=request.request_id, models=[model]))
        elif isinstance(request, HealthRequest):
            if self.answer_health:
                reply = HealthReply(
                    request_id=request.request_id,
                    status="ok",
                    uptime_s=1.0,
                    active_requests=len(connection.jobs),
                )
                await self._send(connection, reply)

    async def _on_hello(self, request: Hello, connection: _Connection) -> None:
        if request.protocol_version != self.protocol_version:
            message = (
                f"protocol version {request.protocol_version} is not supported; "
                f"use {self.protocol_version}"
            )
            await self._send(
                connection,
                ErrorReply(request_id=None, code=ErrorCode.UNSUPPORTED_VERSION, message=message),
            )
            return
        connection.greeted = True
        welcome = Welcome(
            protocol_version=self.protocol_version,
            server_name="fake",
            models=[MODEL_NAME],
            max_frame_bytes=1 << 20,
        )
        await self._send(connection, welcome)

    async def _on_generate(
        self, request: GenerateRequest, connection: _Connection, nursery: trio.Nursery
    ) -> None:
        if request.session_id is not None and request.session_id not in self.sessions:
            message = f"session {request.session_id!r} not found; omit session_id to start one"
            await self._send(
                connection,
                ErrorReply(
                    request_id=request.request_id, code=ErrorCode.UNKNOWN_SESSION, message=message
                ),
            )
            return
        session_id = request.session_id or self._new_session()
        if request.prompt is not None:
            text = request.prompt
        else:
            text = request.messages[-1].content if request.messages else ""
        job = _Job(request, session_id, text.split())
        connection.jobs[request.request_id] = job

        if text in ("hold", "fail", "garble", "kill"):
            nursery.start_soon(self._run_scripted, job, connection)
            return
        connection.batch.append(job)
        if len(connection.batch) >= self.batch_size:
            batch, connection.batch = connection.batch, []
            # Streamed before the next request is read, so a reply to a later
            # request proves that the client has received the whole stream.
            await self._stream_round_robin(batch, connection)

    async def _stream_round_robin(self, batch: list[_Job], connection: _Connection) -> None:
        emitted = {id(job): 0 for job in batch}
        active = list(batch)
        while active:
            for job in list(active):
                limit = min(len(job.pieces), job.request.max_tokens)
                count = emitted[id(job)]
                if job.cancelled.is_set() or count >= limit:
                    active.remove(job)
                    await self._finish(job, connection, count)
                    continue
                if job.request.stream:
                    await self._send(connection, self._chunk(job, count, count + 1))
                    emitted[id(job)] = count + 1
                else:
                    await self._send(connection, self._chunk(job, 0, limit))
                    emitted[id(job)] = limit

    async def _run_scripted(self, job: _Job, connection: _Connection) -> None:
        request_id = job.request.request_id
        if job.pieces == ["garble"]:
            bad_chunk = {"type": "chunk", "request_id": request_id, "text": "x", "token_ids": [-1]}
            await self._send_raw(connection, encode_frame(bad_chunk))
            await job.cancelled.wait()
            await self._finish(job, connection, 1)
            return
        if job.pieces == ["kill"]:
            await self._send_raw(connection, b"\x00\x00\x00\x00")
            await connection.stream.aclose()
            return
        await self._send(connection, self._chunk(job, 0, 1))
        if job.pieces == ["fail"]:
            connection.jobs.pop(request_id, None)
            await self._send(
                connection,
                ErrorReply(
                    request_id=request_id, code=ErrorCode.INTERNAL, message="scripted failure"
                ),
            )
            return
        await job.cancelled.wait()
        await self._finish(job, connection, 1)

    async def _finish(self, job: _Job, connection: _Connection, completion_tokens: int) -> None:
        connection.jobs.pop(job.request.request_id, None)
        if job.cancelled.is_set():
            finish_reason = "cancelled"
        elif completion_tokens < len(job.pieces):
            finish_reason = "length"
        else:
            finish_reason = "eos"
        speculation = SpeculationSummary(
            rounds=completion_tokens,
            num_drafted=completion_tokens,
            num_accepted=0,
            draft_length_histogram={1: completion_tokens},
        )
        done = Done(
            request_id=job.request.request_id,
            session_id=job.session_id,
            finish_reason=finish_reason,
            usage=Usage(
                prompt_tokens=len(job.pieces), completion_tokens=completion_tokens, cached_tokens=0
            ),
            speculation=speculation,
        )
        await self._send(connection, done)

    def _chunk(self, job: _Job, start: int, end: int) -> Chunk:
        text = "".join(piece + " " for piece in job.pieces[start:end])
        round_stats = RoundStats(
            num_drafted=1, num_accepted=0, draft_length=1, drafter="fake-draft"
        )
        return Chunk(
            request_id=job.request.request_id,
            text=text,
            token_ids=list(range(start, end)),
            round=round_stats,
        )

    async def _on_close_session(
        self, request: CloseSessionRequest, connection: _Connection
    ) -> None:
        if request.session_id not in self.sessions:
            message = f"session {request.session_id!r} not found"
            await self._send(
                connection,
                ErrorReply(
                    request_id=request.request_id, code=ErrorCode.UNKNOWN_SESSION, message=message
                ),
            )
            return
        self.sessions.discard(request.session_id)
        reply = CloseSessionReply(
            request_id=request.request_id, session_id=request.session_id, freed_cache_bytes=1024
        )
        await self._send(connection, reply)

    def _stats(self, request_id: str, connection: _Connection) -> StatsReply:
        return StatsReply(
            request_id=request_id, uptime_s=1.0, active_sessions=len(self.sessions),
            active_requests=len(connection.jobs), finished_requests=0, prompt_tokens=0,
            completion_tokens=0, cached_tokens=0, num_drafted=0, num_accepted=0,
            acceptance_rate=0.0, cache_bytes=0, cache_budget_bytes=1 << 30,
            prefill_tokens_per_s=0.0, decode_tokens_per_s=0.0,
        )  # fmt: skip

    def _new_session(self) -> str:
        self._next_session += 1
        session_id = f"session-{self._next_session}"
        self.sessions.add(session_id)
        return session_id

    async def _send(self, connection: _Connection, reply: Reply) -> None:
        self.sent.append(reply)
        await self._send_raw(connection, encode_frame(reply))

    async def _send_raw(self, connection: _Connection, frame: bytes) -> None:
        async with connection.send_lock:
            try:
                await connection.stream.send_all(frame)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                # A client that closed its connection gets no more replies, as from a real server.
                pass
