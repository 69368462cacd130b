"""Every code of the protocol, mirroring ``supabase/functions/_shared/protocol/codes.ts``.

The repository's test suite compares this file with ``codes.ts``, so the two cannot drift.

Example::

    from agent_websocket.codes import Close
    if code == Close.UNAUTHORIZED:
        print("fetch a new token")
"""

from __future__ import annotations

import enum

#: The protocol version announced in the ``connected`` notification.
PROTOCOL_VERSION = 1

#: The subprotocol a client offers; the server selects it.
SUBPROTOCOL = "agent-websocket.v1"

#: Prefix of the subprotocol that carries an access token (``jwt-<token>``).
TOKEN_SUBPROTOCOL_PREFIX = "jwt-"


class Close(enum.IntEnum):
    """WebSocket close codes the server uses."""

    NORMAL = 1000  # also "Session timeout" after inactivity
    GOING_AWAY = 1001  # no pong in time: reconnect and resume
    POLICY = 1008  # origin refused or protocol broken: do not retry as is
    TOO_LARGE = 1009  # a frame above the hard size cap
    INTERNAL = 1011
    RESTART = 1012  # server restart or maximum connection age: reconnect and resume
    TRY_AGAIN_LATER = 1013  # the client stopped reading
    UNAUTHORIZED = 4001  # reconnect only with a new token
    TAKEN_OVER = 4002  # another socket resumed the session: do not reconnect
    TOKEN_EXPIRED = 4003  # fetch a fresh token, then resume
    TOO_MANY_CONNECTIONS = 4029


#: Every error code a server may send. Switch on these, never on messages.
ERROR_CODES = (
    "invalid_json",
    "invalid_message",
    "content_required",
    "unsupported_frame",
    "message_too_large",
    "unknown_command",
    "rate_limited",
    "queue_full",
    "not_found",
    "resume_gap",
    "unauthorized",
    "token_expired",
    "too_many_connections",
    "slow_consumer",
    "interrupted",
    "draining",
    "not_configured",
    "model_not_allowed",
    "refused",
    "budget_exceeded",
    "answer_too_large",
    "upstream_error",
    "upstream_timeout",
    "upstream_rate_limited",
    "upstream_unavailable",
    "insufficient_credits",
    "internal_error",
)

#: Codes the client itself raises (never sent by a server).
CLIENT_ERROR_CODES = (
    "session_lost",
    "closed",
    "policy_violation",
    "session_taken_over",
    "session_timeout",
    "reconnect_failed",
    "delivery_failed",
    "offline_queue_full",
    "duplicate_id",
    "token_error",
    "invalid_url",
    "invalid_conversation",
    "unexpected_answer",
)
