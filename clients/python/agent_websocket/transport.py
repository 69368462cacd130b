"""The reconnecting transport: one WebSocket at a time, frames written in the order they were
queued, and a loop that opens the next socket after each close for as long as its owner asks.
It knows nothing of sessions or queries: :class:`~agent_websocket.AgentClient` opens the
sockets, reads the frames and decides what a close means.

Example::

    transport = Transport(
        open_socket=lambda: websockets.connect(url),
        on_message=print,
        on_close=lambda code, reason: None,  # never reopen
        on_crash=print,
        is_handshaken=lambda: True,
        can_send=lambda: True,
        handshake_timeout_s=10,
    )
    transport.start()
    transport.outbox.append(({"type": "ping"}, None))
    transport.wake()
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any, Awaitable, Callable, Deque, Dict, Optional, Tuple, Union

from websockets.exceptions import ConnectionClosed, InvalidHandshake

Frame = Dict[str, Any]
Outgoing = Tuple[Frame, Optional[Callable[[], None]]]

log = logging.getLogger("agent_websocket")


class SocketRefused(Exception):
    """Raised by ``open_socket`` when no socket could be opened; handled like a close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Transport:
    """Opens sockets with ``open_socket`` until ``on_close`` returns ``None``.

    Args:
        open_socket: opens one WebSocket (a ``websockets`` connection); raises
            :class:`SocketRefused`, ``OSError`` or a handshake error when it cannot.
        on_message: every frame received, text or bytes.
        on_close: a socket closed (or never opened) with this code and reason; returns the
            seconds to wait before opening the next one, or ``None`` to stop.
        on_crash: the loop hit a bug; the owner must fail what waits on it.
        is_handshaken: whether the frames read so far opened the session.
        can_send: whether queued frames may be written now (e.g. not during a replay).
        handshake_timeout_s: from an open socket to ``is_handshaken()``.

    Example::

        transport.outbox.append(({"type": "ping"}, None))
        transport.wake()
    """

    def __init__(
        self,
        *,
        open_socket: Callable[[], Awaitable[Any]],
        on_message: Callable[[Union[str, bytes]], None],
        on_close: Callable[[int, str], Optional[float]],
        on_crash: Callable[[BaseException], None],
        is_handshaken: Callable[[], bool],
        can_send: Callable[[], bool],
        handshake_timeout_s: float,
    ) -> None:
        self._open_socket = open_socket
        self._on_message = on_message
        self._on_close = on_close
        self._on_crash = on_crash
        self._is_handshaken = is_handshaken
        self._can_send = can_send
        self._handshake_timeout_s = handshake_timeout_s
        #: Frames waiting to be written, each with a callback run as it is written.
        self.outbox: Deque[Outgoing] = collections.deque()
        #: The open socket, or ``None`` between sockets.
        self.socket: Any = None
        self._task: Optional["asyncio.Task[None]"] = None
        self._wake: Optional[asyncio.Event] = None

    def start(self) -> None:
        """Starts the loop (again, after :meth:`stop`).

        Example::

            transport.start()
        """
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """Tells the writer to look at the outbox again.

        Example::

            transport.wake()
        """
        if self._wake is not None:
            self._wake.set()

    async def stop(self, code: int, reason: str) -> None:
        """Closes the socket with ``code`` and ends the loop.

        Example::

            await transport.stop(1000, "Client closed")
        """
        task, ws = self._task, self.socket
        if ws is not None:
            await _close_quietly(ws, code, reason)
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while True:
                code, reason = await self._serve()
                delay = self._on_close(code, reason)
                if delay is None:
                    return
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must fail every caller, not leave them waiting
            log.exception("agent_websocket transport crashed")
            self._on_crash(exc)

    async def _serve(self) -> Tuple[int, str]:
        """One socket from open to close; returns its close code and reason."""
        try:
            ws = await self._open_socket()
        except SocketRefused as refused:
            return refused.code, refused.reason
        except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
            # Browsers see all of these as an abnormal close (1006); so does the JS SDK.
            return 1006, f"Connect failed: {exc}"

        self.socket = ws
        writer: Optional["asyncio.Task[None]"] = None
        try:
            await asyncio.wait_for(self._read_until_handshaken(ws), self._handshake_timeout_s)
            writer = asyncio.get_running_loop().create_task(self._write_loop(ws))
            while True:
                self._on_message(await ws.recv())
        except asyncio.TimeoutError:
            return 1006, "Connect timeout"
        except ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
        finally:
            self.socket = None
            if writer is not None:
                writer.cancel()
            await _close_quietly(ws, 4000, "Client dropped the socket")

    async def _read_until_handshaken(self, ws: Any) -> None:
        while not self._is_handshaken():
            self._on_message(await ws.recv())

    async def _write_loop(self, ws: Any) -> None:
        # One writer per socket keeps frames in the order they were queued.
        assert self._wake is not None
        while True:
            while self.socket is ws and self._can_send() and self.outbox:
                frame, on_sent = self.outbox.popleft()
                if on_sent is not None:
                    on_sent()
                try:
                    await ws.send(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))
                except ConnectionClosed:
                    return  # the reader sees the close; resume resends unanswered frames
            self._wake.clear()
            await self._wake.wait()


async def _close_quietly(ws: Any, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason)
    except Exception:
        pass  # already closed, or the link is gone
