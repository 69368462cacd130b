"""Reconnect policy as pure functions: backoff delays, which close codes end the client,
duplicate filtering by ``seq`` and the resume and conversation URLs. The same numbers and rules as the JS
SDK's ``client/backoff.ts``; free of I/O so they can be tested without a server.

Example::

    from agent_websocket.backoff import ReconnectPolicy, backoff_delay
    delay_s = backoff_delay(3, ReconnectPolicy())  # somewhere in [0, 2.0)
"""

from __future__ import annotations

import math
import random as _random
import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


@dataclass(frozen=True)
class ReconnectPolicy:
    """Full-jitter exponential backoff: 250 ms, doubling, capped at 10 s, retried forever.

    Example::

        ReconnectPolicy(max_attempts=5).max_delay_s  # 10.0
    """

    initial_delay_s: float = 0.25
    max_delay_s: float = 10.0
    factor: float = 2.0
    #: Reconnect attempts in a row before the client gives up; ``math.inf`` for never.
    max_attempts: float = math.inf


def backoff_delay(
    attempt: int, policy: ReconnectPolicy, random: Callable[[], float] = _random.random
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based):
    ``random(0, min(max_delay_s, initial_delay_s * factor ** attempt))``.

    Full jitter spreads a crowd of clients dropped by one server restart over the whole
    window instead of letting them return in lockstep.

    Example::

        backoff_delay(0, ReconnectPolicy(), lambda: 0.5)  # 0.125
    """
    try:
        ceiling = policy.initial_delay_s * policy.factor ** max(0, attempt)
    except OverflowError:
        ceiling = math.inf
    return random() * min(policy.max_delay_s, ceiling)


class CloseDisposition(NamedTuple):
    """What a close code means: reconnect, or stop with ``error`` as the AgentError code."""

    reconnect: bool
    error: Optional[str] = None


def close_disposition(code: int, reason: str) -> CloseDisposition:
    """Classifies a close.

    Terminal: 4001 (bad token: retrying cannot help until the app has a new one), 1008
    (policy), 4029 (too many connections: retrying only adds load), 4002 (another socket
    resumed this session: reconnecting would steal it back, and the two would evict each
    other forever) and 1000 "Session timeout". Everything else, 1012 restart and an abnormal
    1006 included, is worth a reconnect and resume.

    Example::

        close_disposition(4001, "")  # CloseDisposition(reconnect=False, error='unauthorized')
    """
    if code == 4001:
        return CloseDisposition(False, "unauthorized")
    if code == 1008:
        return CloseDisposition(False, "policy_violation")
    if code == 4029:
        return CloseDisposition(False, "too_many_connections")
    if code == 4002:
        return CloseDisposition(False, "session_taken_over")
    if code == 1000 and "session timeout" in reason.lower():
        return CloseDisposition(False, "session_timeout")
    return CloseDisposition(True)


def is_duplicate(seq: Any, last_seq: int) -> bool:
    """True when a frame was already delivered: its ``seq`` is not above the highest seen.

    Frames without a positive ``seq`` are about one socket (``resumed``,
    ``session_taken_over``), outside the session's numbering, and never duplicates.

    Example::

        is_duplicate(7, 7), is_duplicate(8, 7), is_duplicate(0, 7)  # (True, False, False)
    """
    is_number = isinstance(seq, (int, float)) and not isinstance(seq, bool)
    return is_number and 0 < seq <= last_seq


def resume_url(url: str, session_id: str, last_seq: int) -> str:
    """``url`` with ``session_id`` and ``last_seq`` set, other query parameters kept.

    Example::

        resume_url("wss://x.supabase.co/functions/v1/agent_websocket?a=1", "abc", 42)
        # "wss://x.supabase.co/functions/v1/agent_websocket?a=1&session_id=abc&last_seq=42"
    """
    parts = urlsplit(http_to_ws(url))
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("session_id", "last_seq")]
    query += [("session_id", session_id), ("last_seq", str(last_seq))]
    return urlunsplit(parts._replace(query=urlencode(query)))


#: What a conversation name may be: 1-128 of ``[A-Za-z0-9_.:-]`` (the server's rule).
CONVERSATION_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def is_conversation_name(name: Any) -> bool:
    """Whether ``name`` may name a conversation.

    Example::

        is_conversation_name("trip-2025"), is_conversation_name("no spaces")  # (True, False)
    """
    return isinstance(name, str) and CONVERSATION_NAME.fullmatch(name) is not None


def conversation_url(url: str, name: str, last_seq: Optional[int] = None) -> str:
    """The URL that joins conversation ``name``, or resumes it after ``last_seq`` when given.

    Other query parameters are kept; ``session_id`` is dropped (a conversation names its
    session).

    Example::

        conversation_url("ws://127.0.0.1:8000/?session_id=old", "trip", 12)
        # "ws://127.0.0.1:8000/?conversation=trip&last_seq=12"
    """
    parts = urlsplit(http_to_ws(url))
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("session_id", "last_seq", "conversation")]
    query.append(("conversation", name))
    if last_seq is not None:
        query.append(("last_seq", str(last_seq)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def conversation_in_url(url: str) -> Optional[str]:
    """The ``conversation`` query parameter of ``url``, if it has one.

    Example::

        conversation_in_url("ws://h/?conversation=trip")  # "trip"
    """
    values = [v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)
              if k == "conversation"]
    return values[-1] if values else None


def http_to_ws(url: str) -> str:
    """Accepts the function's ``http(s)://`` URL as copied from the dashboard.

    Example::

        http_to_ws("https://x.supabase.co/functions/v1/agent_websocket")  # "wss://…"
    """
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):]
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):]
    return url
