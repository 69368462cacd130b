"""A query in progress: ``async for`` its text deltas, ``await`` it for the final response.

Example::

    answer = client.ask("Tell me a story")
    async for delta in answer:
        print(delta, end="", flush=True)
    final = await answer  # the final ``response`` frame, as a dict
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, Generator, Generic, List, Optional, TypeVar

from .errors import AgentError

if TYPE_CHECKING:
    from .client import AgentClient

Frame = Dict[str, Any]
T = TypeVar("T")


def _retrieve(fut: "asyncio.Future[Any]") -> None:
    # Mark the outcome as seen: a caller that only iterates deltas gets the error there, and
    # asyncio must not log "exception was never retrieved" for the future nobody awaited.
    if not fut.cancelled():
        fut.exception()


class Replayable(Generic[T]):
    """An append-only buffer that every reader iterates from the start, whenever it starts."""

    def __init__(self) -> None:
        self._items: List[T] = []
        self._ended = False
        self._error: Optional[BaseException] = None
        self._waiters: List["asyncio.Future[None]"] = []

    def push(self, item: T) -> None:
        self._items.append(item)
        self._wake()

    def end(self, error: Optional[BaseException] = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def __aiter__(self) -> AsyncIterator[T]:
        i = 0
        while True:
            if i < len(self._items):
                i += 1
                yield self._items[i - 1]
            elif self._ended:
                if self._error is not None:
                    raise self._error
                return
            else:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter


class Ask:
    """A query in progress. Created by :meth:`AgentClient.ask`; survives reconnects.

    - ``async for delta in ask`` yields the text as it streams (the whole text once for
      ``stream=False``) and raises :class:`AgentError` if the query fails;
    - ``await ask`` returns the final ``response`` frame as a dict (``content``, ``usage``,
      ``timing``, ``finish_reason``, …) or raises :class:`AgentError`;
    - ``async for frame in ask.frames()`` yields every frame of the query: ``status``,
      ``response``, and the v1.1 ``reasoning``, ``tool_call``, ``tool_result`` frames (and any
      later frame type), ending with the terminal frame.

    Example::

        ask = client.ask("Summarise this", model="openai/gpt-4o-mini")
        async for frame in ask.frames():
            if frame["type"] == "tool_call":
                print("calling", frame["tool"])
        print((await ask)["content"])
    """

    def __init__(self, client: "AgentClient", id: str, frame: Frame) -> None:
        self.id = id
        self.frame = frame
        self._client = client
        self._deltas: Replayable[str] = Replayable()
        self._frames: Replayable[Frame] = Replayable()
        self._streamed = False
        self._result: "asyncio.Future[Frame]" = asyncio.get_running_loop().create_future()
        self._result.add_done_callback(_retrieve)
        # Delivery state, owned by the client: written to a socket of the current session
        # (the server may have it), acknowledged by some frame (the server surely has it).
        self.sent = False
        self.acked = False
        self.resends = 0

    @property
    def done(self) -> bool:
        """Whether the query has ended (answered or failed).

        Example::

            if not ask.done: await ask.cancel()
        """
        return self._result.done()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas.__aiter__()

    def __await__(self) -> Generator[Any, None, Frame]:
        # Shielded: cancelling one awaiting task must not cancel the query for the others.
        return asyncio.shield(self._result).__await__()

    def frames(self) -> AsyncIterator[Frame]:
        """Every frame of this query, from the first, whenever you start reading.

        Example::

            async for f in ask.frames():
                print(f["type"], f.get("state") or f.get("delta") or "")
        """
        return self._frames.__aiter__()

    async def cancel(self) -> None:
        """Asks the server to stop; the query then ends with ``finish_reason: "cancelled"``.

        A cancel that loses the race with the end of the query is not an error.

        Example::

            await ask.cancel()
            print((await ask)["finish_reason"])  # "cancelled"
        """
        if self.done:
            return
        try:
            await self._client.cancel(self.id)
        except AgentError:
            pass

    # Called by the client -------------------------------------------------------------------

    def _feed(self, frame: Frame) -> bool:
        """Takes one frame of this query; returns True when it ended the query."""
        self._frames.push(frame)
        kind = frame.get("type")
        if kind == "error":
            self._fail(AgentError.from_frame(frame))
            return True
        if kind != "response":
            return False
        delta = frame.get("delta")
        if isinstance(delta, str) and delta:
            self._deltas.push(delta)
            self._streamed = True
        if frame.get("done") is not True:
            return False
        content = frame.get("content")
        # stream=False answers come whole; iterating still yields the text once.
        if not self._streamed and isinstance(content, str) and content:
            self._deltas.push(content)
        self._deltas.end()
        self._frames.end()
        if not self._result.done():
            self._result.set_result(frame)
        return True

    def _fail(self, error: AgentError) -> None:
        self._deltas.end(error)
        self._frames.end(error)
        if not self._result.done():
            self._result.set_exception(error)

    def __repr__(self) -> str:
        return f"<Ask id={self.id!r} done={self.done}>"
