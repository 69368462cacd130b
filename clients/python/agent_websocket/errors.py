"""The one exception type of the client.

Example::

    try:
        answer = await client.ask("hi")
    except AgentError as e:
        if e.retryable:
            await asyncio.sleep((e.retry_after_ms or 1000) / 1000)
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class AgentError(Exception):
    """A failure reported by the server (an ``error`` frame) or by the client.

    ``code`` is stable (see :mod:`agent_websocket.codes`); ``message`` is for humans.
    Server codes are kept as sent; the client adds ``session_lost``, ``closed``,
    ``unauthorized``, ``session_taken_over``, ``reconnect_failed`` and the others in
    :data:`agent_websocket.codes.CLIENT_ERROR_CODES`.

    Example::

        err = AgentError("rate_limited", "Slow down", retryable=True, retry_after_ms=900)
        assert str(err) == "rate_limited: Slow down"
    """

    def __init__(
        self,
        code: str,
        message: str,
        retryable: bool = False,
        retry_after_ms: Optional[int] = None,
        *,
        id: Optional[str] = None,
        frame: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
        #: The query or command the error belongs to.
        self.id = id
        #: The server's ``error`` frame, when it came from one (``issues`` lives there).
        self.frame = frame

    @classmethod
    def from_frame(cls, frame: Dict[str, Any]) -> "AgentError":
        """Wraps a server ``error`` frame.

        Example::

            AgentError.from_frame({"type": "error", "code": "queue_full", "message": "Full",
                                   "retryable": True}).retryable  # True
        """
        retry_after = frame.get("retry_after_ms")
        fid = frame.get("id")
        return cls(
            str(frame.get("code", "internal_error")),
            str(frame.get("message", frame.get("code", ""))),
            frame.get("retryable") is True,
            int(retry_after) if isinstance(retry_after, (int, float)) else None,
            id=fid if isinstance(fid, str) else None,
            frame=frame,
        )

    def with_id(self, id: Optional[str]) -> "AgentError":
        """A copy attributed to one query or call (a client error fails several at once).

        Example::

            AgentError("closed", "The client was closed").with_id("q1").id  # "q1"
        """
        return AgentError(
            self.code, self.message, self.retryable, self.retry_after_ms, id=id, frame=self.frame
        )

    def __repr__(self) -> str:
        return f"AgentError(code={self.code!r}, message={self.message!r}, retryable={self.retryable})"
