"""The asyncio client: one connection to the agent that outlives sockets.

It reconnects with full-jitter backoff, resumes the session with ``?session_id=…&last_seq=N``
(replayed frames are delivered once, in order) and keeps queries alive across drops. With
``conversation=`` it joins the user's named conversation instead, which other sockets may
share, and resumes it with ``?conversation=…&last_seq=N``. The behaviour mirrors the JS SDK
(``client/agent_client.ts``).

Example::

    async with AgentClient("ws://127.0.0.1:8000") as client:
        answer = client.ask("What is a WebSocket?")
        async for delta in answer:
            print(delta, end="", flush=True)
        print((await answer)["usage"])
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time
import uuid
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Union

import websockets
from websockets.exceptions import InvalidURI

from .ask import Ask, _retrieve
from .backoff import (
    ReconnectPolicy,
    backoff_delay,
    close_disposition,
    conversation_in_url,
    conversation_url,
    http_to_ws,
    is_conversation_name,
    is_duplicate,
    resume_url,
)
from .codes import SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX
from .errors import AgentError
from .transport import SocketRefused, Transport

Frame = Dict[str, Any]
#: A token, or a function (sync or async) called before every (re)connect for a fresh one.
TokenSource = Union[None, str, Callable[[], Union[str, Awaitable[str]]]]
Listener = Callable[[Any], None]

log = logging.getLogger("agent_websocket")

# How long to wait for the replay announced by `resumed` before sending queued frames anyway,
# so a server that miscounts `replayed` delays the queue instead of wedging it.
REPLAY_GRACE_S = 2.0
# A socket must stay up this long before the backoff starts over; otherwise a server that
# accepts and then drops at once would be hammered at the shortest delay forever.
STABLE_S = 3.0
# Resends of one unanswered frame across resumes before it fails: a frame that makes the
# server drop the connection must not be replayed into it forever.
MAX_RESENDS = 2
# Socket ids of this client remembered, so that frames a replay addresses to one of its earlier
# sockets (a pong, an error about its frame) are still taken as its own.
OWN_SOCKETS = 16
# Ids of this client's queries remembered after they ended, for `is_own_query`.
OWN_QUERIES = 256

EVENTS = ("frame", "open", "close", "reconnecting", "session", "presence", "error")


def _remember(ids: "OrderedDict[str, None]", id: str, limit: int) -> None:
    ids.pop(id, None)
    ids[id] = None
    while len(ids) > limit:
        ids.popitem(last=False)


def _check_conversation(name: Any) -> str:
    if not is_conversation_name(name):
        raise AgentError(
            "invalid_conversation",
            f"Conversation name must be 1-128 of A-Z a-z 0-9 _ . : - (got {name!r})",
        )
    return name


class _Call:
    """A command, ping or feedback awaiting the frame that answers it."""

    def __init__(self, id: str, frame: Frame, matches: Callable[[Frame], bool]) -> None:
        self.id = id
        self.frame = frame
        self.matches = matches
        self.future: "asyncio.Future[Frame]" = asyncio.get_running_loop().create_future()
        self.sent = False
        self.acked = False
        self.resends = 0

    def _fail(self, error: AgentError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class AgentClient:
    """A connection to the agent_websocket function.

    Nothing happens on the network until :meth:`connect` (or ``async with``). Queries and
    commands made while disconnected wait in an offline queue (``max_offline_queue``) and are
    sent in order once a session is open.

    Args:
        url: ``ws(s)://`` (or the ``http(s)://`` function URL) of the function.
        token: the user's access token, sent as subprotocol ``jwt-<token>`` next to
            ``agent-websocket.v1``; or a function (sync or async) returning one, called again
            before every reconnect.
        reconnect: ``False`` never reconnects.
        max_attempts: reconnect attempts in a row before giving up (``None``: forever).
        initial_delay_s, max_delay_s, backoff_factor: full-jitter backoff (250 ms, 10 s, x2).
        heartbeat_s: protocol ping interval that detects a dead link (``None``: off).
        heartbeat_timeout_s: how long a ping may go unanswered before the socket is dropped.
        connect_timeout_s: from opening a socket to ``connected``/``resumed``.
        max_offline_queue: frames kept while disconnected.
        protocols: extra subprotocols to offer.
        connect_kwargs: passed to ``websockets.connect`` (``ssl``, ``extra_headers``, …).
        conversation: joins the user's conversation of this name (1-128 of
            ``[A-Za-z0-9_.:-]``, v1.1): every socket of it gets every frame, any may ask. A
            ``session_id`` in the URL is ignored then; without it, a ``conversation``
            parameter already in the URL is used. A bad name raises ``AgentError``
            ``invalid_conversation``.

    Example::

        client = AgentClient(url, token=lambda: session.access_token, max_attempts=20)
        client.on("reconnecting", lambda e: print("retry", e["attempt"], e["delay_s"]))
        await client.connect()
    """

    def __init__(
        self,
        url: str,
        token: TokenSource = None,
        *,
        reconnect: bool = True,
        max_attempts: Optional[int] = None,
        initial_delay_s: float = 0.25,
        max_delay_s: float = 10.0,
        backoff_factor: float = 2.0,
        heartbeat_s: Optional[float] = 15.0,
        heartbeat_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        max_offline_queue: int = 100,
        protocols: Iterable[str] = (),
        connect_kwargs: Optional[Dict[str, Any]] = None,
        conversation: Optional[str] = None,
    ) -> None:
        self._url = url
        named = conversation if conversation is not None else conversation_in_url(url)
        self._conversation = None if named is None else _check_conversation(named)
        # Whether this client has been in its conversation, so the next socket resumes it.
        self._joined = False
        self._socket_id: Optional[str] = None
        self._own_sockets: "OrderedDict[str, None]" = OrderedDict()
        self._sockets: Optional[int] = None
        self._own_queries: "OrderedDict[str, None]" = OrderedDict()
        self._token = token
        attempts = 0 if not reconnect else (math.inf if max_attempts is None else max_attempts)
        self._policy = ReconnectPolicy(initial_delay_s, max_delay_s, backoff_factor, attempts)
        self._heartbeat_s = heartbeat_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_offline_queue = max_offline_queue
        self._protocols = [SUBPROTOCOL, *(p for p in protocols if p != SUBPROTOCOL)]
        self._connect_kwargs = dict(connect_kwargs or {})

        self._state = "idle"
        self._transport = Transport(
            open_socket=self._open_socket,
            on_message=self._on_message,
            on_close=self._on_close,
            on_crash=self._on_crash,
            is_handshaken=lambda: self._handshaken,
            can_send=self._can_send,
            handshake_timeout_s=connect_timeout_s,
        )
        self._ready: Optional["asyncio.Future[None]"] = None
        self._handshaken = False
        self._session_id: Optional[str] = None
        self._last_seq = 0
        self._server_info: Frame = {}
        self._session_ended = False
        self._attempt = 0
        self._opened_at = 0.0
        self._replay_left = 0
        self._replay_timer: Optional[asyncio.TimerHandle] = None

        self._asks: Dict[str, Ask] = {}
        self._calls: List[_Call] = []
        self._listeners: Dict[str, List[Listener]] = {name: [] for name in EVENTS}

    # -----------------------------------------------------------------------------------------
    # Public state

    @property
    def state(self) -> str:
        """``idle``, ``connecting``, ``open``, ``reconnecting`` or ``closed``.

        Example::

            if client.state == "reconnecting": show_banner()
        """
        return self._state

    @property
    def session_id(self) -> Optional[str]:
        """The session this client resumes after a drop.

        Example::

            print(client.session_id)
        """
        return self._session_id

    @property
    def conversation(self) -> Optional[str]:
        """The conversation this client is in (the ``conversation`` option), if any.

        Example::

            print(client.conversation)
        """
        return self._conversation

    @property
    def socket_id(self) -> Optional[str]:
        """This socket's id in the conversation (new for every socket, so after a reconnect).

        Frames whose ``socket`` names another id answer another socket of the conversation.

        Example::

            print(client.socket_id)
        """
        return self._socket_id

    @property
    def sockets(self) -> Optional[int]:
        """How many sockets are in the conversation, this one included (from ``presence``).

        Example::

            print(f"{client.sockets} clients here")
        """
        return self._sockets

    def is_own_query(self, id: str) -> bool:
        """Whether query ``id`` was sent by this client (in flight or among its recent ones).

        In a conversation the ``frame`` event also carries the queries other sockets sent.

        Example::

            client.on("frame", lambda f: f["type"] == "response" and f.get("done")
                      and not client.is_own_query(f["id"]) and print("other:", f["content"]))
        """
        return id in self._asks or id in self._own_queries

    @property
    def last_seq(self) -> int:
        """Highest ``seq`` delivered so far.

        Example::

            print(client.last_seq)
        """
        return self._last_seq

    @property
    def server_info(self) -> Frame:
        """The session's ``connected`` notification: ``models``, ``limits``, ``agent``, …

        Example::

            print(client.server_info.get("models"))
        """
        return self._server_info

    def on(self, event: str, listener: Listener) -> Callable[[], None]:
        """Subscribes to an event; returns the function that unsubscribes.

        Events and payloads: ``frame`` (every server frame, a dict, including those a
        conversation addresses to another socket), ``open`` (``session_id``, ``resumed``,
        ``replayed``, ``socket_id``, ``conversation``), ``close`` (``code``, ``reason``,
        ``will_reconnect``), ``reconnecting`` (``attempt``, ``delay_s``), ``session``
        (``session_id``, ``previous_session_id``, ``lost``), ``presence`` (the ``presence``
        notification: ``sockets``, ``joined`` or ``left``) and ``error`` (an
        :class:`AgentError`: server ``error`` frames and terminal closes).

        Example::

            off = client.on("close", lambda e: print("closed", e["code"]))
            off()
        """
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}; one of {', '.join(EVENTS)}")
        listeners = self._listeners[event]
        listeners.append(listener)

        def off() -> None:
            if listener in listeners:
                listeners.remove(listener)

        return off

    # -----------------------------------------------------------------------------------------
    # Connection

    async def connect(self) -> None:
        """Opens the connection; returns on the first ``connected`` or ``resumed``.

        Failed attempts are retried per the reconnect policy; it raises :class:`AgentError`
        only when the client stops (a terminal close such as ``unauthorized``, attempts
        exhausted, or :meth:`close`). After :meth:`close` it starts over, resuming the
        session when the server still has it.

        Example::

            await client.connect()
        """
        if self._state == "open":
            return
        loop = asyncio.get_running_loop()
        if self._ready is None:
            self._ready = loop.create_future()
            self._ready.add_done_callback(_retrieve)
        if self._state in ("idle", "closed"):
            self._state = "connecting"
            self._attempt = 0
            self._transport.start()
        await asyncio.shield(self._ready)

    async def close(self, code: int = 1000, reason: str = "Client closed") -> None:
        """Closes for good: no reconnect; pending queries and calls raise ``closed``.

        Example::

            await client.close()
        """
        if self._state != "closed":
            was_idle = self._state == "idle"
            self._stop(AgentError("closed", "The client was closed"))
            if not was_idle:
                self._emit("close", {"code": code, "reason": reason, "will_reconnect": False})
        await self._transport.stop(code, reason)

    async def __aenter__(self) -> "AgentClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -----------------------------------------------------------------------------------------
    # Queries and commands

    def ask(
        self,
        content: str,
        *,
        id: Optional[str] = None,
        model: Optional[str] = None,
        stream: Optional[bool] = None,
        metadata: Optional[Dict[str, Any]] = None,
        **fields: Any,
    ) -> Ask:
        """Sends a query; returns an :class:`Ask` to ``async for`` (deltas) and ``await``.

        ``fields`` are added to the query frame as they are (for protocol additions such as
        v1.1's ``tools``). Failures (including ``offline_queue_full``, ``closed`` and
        ``message_too_large`` found before sending) surface when the Ask is awaited or
        iterated, never as an exception from this call.

        Example::

            final = await client.ask("Write a haiku", model="openai/gpt-4o-mini", stream=False)
        """
        qid = id if id is not None else str(uuid.uuid4())
        frame: Frame = {"type": "query", "id": qid, "content": content}
        for key, value in (("model", model), ("stream", stream), ("metadata", metadata)):
            if value is not None:
                frame[key] = value
        frame.update(fields)
        ask = Ask(self, qid, frame)
        try:
            if qid in self._asks:
                raise AgentError("duplicate_id", f"Query {qid} is in progress", id=qid)
            self._check_limits(frame)
            self._asks[qid] = ask
            _remember(self._own_queries, qid, OWN_QUERIES)
            self._enqueue(frame, lambda: setattr(ask, "sent", True))
        except AgentError as err:
            if self._asks.get(qid) is ask:
                del self._asks[qid]
            ask._fail(err.with_id(qid))
        return ask

    async def command(self, name: str, args: Optional[Dict[str, Any]] = None) -> Frame:
        """Sends a command; returns the ``notification`` answering it (matched by id).

        Example::

            stats = await client.command("stats")
            print(stats["queries"])
        """
        cid = str(uuid.uuid4())
        frame: Frame = {"type": "command", "name": name, "id": cid}
        if args is not None:
            frame["args"] = args
        return await self._call(cid, frame, lambda f: f.get("type") == "notification")

    async def cancel(self, id: Optional[str] = None) -> Frame:
        """Cancels query ``id``, or the one being answered when omitted.

        Example::

            await client.cancel(ask.id)
        """
        return await self.command("cancel", None if id is None else {"id": id})

    async def reset(self) -> Frame:
        """Makes the server forget the conversation.

        Example::

            await client.reset()
        """
        return await self.command("reset")

    async def history(self) -> List[Dict[str, Any]]:
        """The conversation as ``[{role, content}]``, oldest first.

        Example::

            for m in await client.history(): print(m["role"], m["content"])
        """
        return list((await self.command("history")).get("messages") or [])

    async def stats(self) -> Frame:
        """Session statistics: ``queries``, ``responses``, ``errors``, ``completion_tokens``, …

        Example::

            print((await client.stats())["completion_tokens"])
        """
        return await self.command("stats")

    async def conversations(self) -> List[Dict[str, Any]]:
        """The user's conversations as ``[{name, messages, updated_at}]``, newest first.

        Raises :class:`AgentError` (``unknown_command`` from a server without memory).

        Example::

            for c in await client.conversations(): print(c["name"], c["messages"])
        """
        answer = await self._memory_command("conversations", "conversations")
        return list(answer.get("conversations") or [])

    async def search_memory(
        self, query: str, limit: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        """Searches what was said in all the user's conversations; hits best first, as
        ``[{conversation, role, content, timestamp, score}]``.

        Example::

            for hit in await client.search_memory("flight to Lisbon", limit=5):
                print(hit["conversation"], hit["content"])
        """
        args: Dict[str, Any] = {"query": query}
        if limit is not None:
            args["limit"] = limit
        answer = await self._memory_command("search_memory", "search_memory", args)
        return list(answer.get("results") or [])

    async def clear_memory(self, conversation: Optional[str] = None) -> int:
        """Forgets one conversation's history, or every conversation's; returns how many
        conversations were emptied (they stay, empty, and can go on).

        Example::

            print(await client.clear_memory("old-trip"), "conversation emptied")
        """
        args = None if conversation is None else {"conversation": _check_conversation(conversation)}
        answer = await self._memory_command("clear_memory", "memory_cleared", args)
        return int(answer.get("cleared") or 0)

    async def _memory_command(
        self, name: str, event: str, args: Optional[Dict[str, Any]] = None
    ) -> Frame:
        answer = await self.command(name, args)
        if answer.get("event") != event:
            raise AgentError(
                "unexpected_answer", f"Expected {event}, got {answer.get('event')}",
                id=answer.get("id"),
            )
        return answer

    async def feedback(self, id: str, rating: str, comment: Optional[str] = None) -> Frame:
        """Rates response ``id`` ``"up"`` or ``"down"``; returns ``feedback_received``.

        Example::

            await client.feedback(ask.id, "up", "Spot on")
        """
        frame: Frame = {"type": "feedback", "id": id, "rating": rating}
        if comment is not None:
            frame["comment"] = comment
        return await self._call(
            id,
            frame,
            lambda f: f.get("type") == "notification" and f.get("event") == "feedback_received",
        )

    async def ping(self) -> float:
        """Round trip of a protocol-level ``ping`` in milliseconds, from the moment it is sent.

        Example::

            print(f"{await client.ping():.1f} ms")
        """
        pid = str(uuid.uuid4())
        sent_at = [0.0]
        await self._call(
            pid,
            {"type": "ping", "id": pid},
            lambda f: f.get("type") == "pong",
            lambda: sent_at.__setitem__(0, time.perf_counter()),
        )
        return (time.perf_counter() - sent_at[0]) * 1000

    def send(self, frame: Frame) -> None:
        """Sends a raw frame now, or queues it while disconnected.

        Raises ``AgentError`` ``offline_queue_full`` past ``max_offline_queue`` and ``closed``
        after the client stopped.

        Example::

            client.send({"type": "feedback", "id": "q1", "rating": "down"})
        """
        self._enqueue(frame, None)

    # -----------------------------------------------------------------------------------------
    # Connection lifecycle

    async def _open_socket(self) -> Any:
        """Opens the next socket: a fresh session, or a resume of the current one."""
        try:
            token = await self._get_token()
        except Exception as exc:
            self._emit("error", AgentError("token_error", f"Token provider failed: {exc}"))
            raise SocketRefused(4000, "Token provider failed") from exc
        protocols = list(self._protocols)
        if token:
            protocols.append(TOKEN_SUBPROTOCOL_PREFIX + token)
        if self._conversation is not None:
            last_seq = self._last_seq if self._joined else None
            url = conversation_url(self._url, self._conversation, last_seq)
        elif self._session_id:
            url = resume_url(self._url, self._session_id, self._last_seq)
        else:
            url = http_to_ws(self._url)
        try:
            return await websockets.connect(
                url,
                subprotocols=protocols,  # type: ignore[arg-type]
                open_timeout=self._connect_timeout_s,
                ping_interval=self._heartbeat_s,
                ping_timeout=self._heartbeat_timeout_s,
                # A peer that let a ping go unanswered will not finish a close handshake
                # either; websockets waits this long before it reports the socket closed.
                close_timeout=min(2.0, self._heartbeat_timeout_s),
                max_size=64 * 2**20,
                **self._connect_kwargs,
            )
        except InvalidURI as exc:
            err = AgentError("invalid_url", f"Cannot open {self._url}: {exc}")
            self._emit("error", err)
            self._stop(err)
            raise SocketRefused(1000, "Invalid URL") from exc

    def _on_close(self, code: int, reason: str) -> Optional[float]:
        """A socket closed or never opened: the delay before the next one, or None to stop."""
        self._handshaken = False
        self._replay_left = 0
        if self._replay_timer is not None:
            self._replay_timer.cancel()
            self._replay_timer = None
        if self._state == "closed" or not self._should_reconnect(code, reason):
            return None
        delay = backoff_delay(self._attempt, self._policy)
        self._attempt += 1
        self._state = "reconnecting"
        log.info("reconnecting in %.3f s (attempt %d) after close %d %s",
                 delay, self._attempt, code, reason)
        self._emit("reconnecting", {"attempt": self._attempt, "delay_s": delay})
        return delay

    def _on_crash(self, exc: BaseException) -> None:
        self._stop(AgentError("internal_error", f"The client crashed: {exc!r}"))

    async def _get_token(self) -> Optional[str]:
        if self._token is None or isinstance(self._token, str):
            return self._token
        value = self._token()
        return await value if inspect.isawaitable(value) else value

    def _should_reconnect(self, code: int, reason: str) -> bool:
        if self._opened_at and time.monotonic() - self._opened_at >= STABLE_S:
            self._attempt = 0
        self._opened_at = 0.0
        reconnect, error = close_disposition(code, reason)
        # The notification is the reliable signal; the close reason text is only a convention.
        if self._session_ended:
            reconnect, error = False, "session_timeout"
        if code == 1009:
            # Resending the frame that was too big would only loop: fail it instead.
            too_large = AgentError("message_too_large", "Frame too large for the server")
            self._fail_sent(too_large, unacked_only=True)
        will_reconnect = reconnect and self._attempt < self._policy.max_attempts
        self._emit("close", {"code": code, "reason": reason, "will_reconnect": will_reconnect})
        if self._state == "closed":
            return False
        if not will_reconnect:
            if error:
                message = f"Connection closed ({code}{' ' + reason if reason else ''})"
            else:
                message = f"Gave up after {self._attempt} reconnect attempts (last: {code} {reason})"
            err = AgentError(
                error or "reconnect_failed",
                message,
                retryable=error is None or error == "too_many_connections",
            )
            if error == "session_timeout":
                self._session_id = None
                self._joined = False
            self._emit("error", err)
            self._stop(err)
            return False
        return True

    def _stop(self, error: AgentError) -> None:
        self._state = "closed"
        self._session_ended = False
        self._transport.outbox.clear()
        pending = self._pending()
        self._asks.clear()
        self._calls.clear()
        for p in pending:
            p._fail(error.with_id(p.id))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        self._ready = None

    # -----------------------------------------------------------------------------------------
    # Incoming frames

    def _on_message(self, data: Union[str, bytes]) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            return  # the protocol only sends JSON text frames; nothing sensible to do
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            return
        if self._handshaken:
            return self._accept(frame)
        if frame["type"] == "notification" and frame.get("event") in ("connected", "resumed"):
            return self._on_handshake(frame)
        # An error before the handshake explains a refused login or resume; it may already be
        # numbered in a new session, so it bypasses the seq filter of the old one.
        if frame["type"] == "error":
            self._dispatch(frame)
        else:
            self._accept(frame)

    def _on_handshake(self, frame: Frame) -> None:
        resumed = frame.get("event") == "resumed"
        previous = self._session_id
        sid = frame.get("session_id")
        session_id = sid if isinstance(sid, str) else previous or ""
        # `resumed` is about the socket (seq 0): it neither passes the filter nor moves last_seq.
        replayed = max(0, int(frame.get("replayed") or 0)) if resumed else 0
        if not resumed:
            seq = frame.get("seq")
            self._last_seq = seq if isinstance(seq, int) else 0
            self._session_ended = False
            self._server_info = frame
        self._session_id = session_id
        socket_id = frame.get("socket_id", frame.get("socket"))
        self._socket_id = socket_id if isinstance(socket_id, str) else None
        if self._socket_id is not None:
            _remember(self._own_sockets, self._socket_id, OWN_SOCKETS)
        if isinstance(frame.get("sockets"), int):
            self._sockets = frame["sockets"]
        was_joined = self._joined
        if self._conversation is not None:
            self._joined = True
        self._handshaken = True
        self._opened_at = time.monotonic()
        self._replay_left = replayed
        self._state = "open"
        if replayed:
            self._replay_timer = asyncio.get_running_loop().call_later(
                REPLAY_GRACE_S, self._after_replay
            )

        # A `connected` answer to a resume means the old session is gone (in a conversation:
        # its frames since last_seq are, so the queries this client awaits may never end here).
        lost = not resumed and (previous is not None or was_joined)
        if lost or session_id != previous:
            self._emit(
                "session",
                {"session_id": session_id, "previous_session_id": previous, "lost": lost},
            )
        if lost:
            # What the old session had is gone; frames never sent go to the new session. The
            # server's not_found / resume_gap error arrives as an `error` event.
            self._fail_sent(
                AgentError(
                    "session_lost",
                    f"Session {previous} could not be resumed; a new session started",
                    retryable=True,
                )
            )
        self._dispatch(frame)
        opened: Frame = {"session_id": session_id, "resumed": resumed, "replayed": replayed}
        if self._conversation is not None:
            opened.update(socket_id=self._socket_id, conversation=self._conversation)
        self._emit("open", opened)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        self._ready = None
        if not replayed:
            self._after_replay()

    def _accept(self, frame: Frame) -> None:
        replaying = self._replay_left > 0
        if replaying:
            self._replay_left -= 1
        seq = frame.get("seq")
        if not is_duplicate(seq, self._last_seq):
            if isinstance(seq, int) and seq > self._last_seq:
                self._last_seq = seq
            self._dispatch(frame)
        if replaying and self._replay_left == 0:
            self._after_replay()

    def _after_replay(self) -> None:
        """The session is caught up: resend what a dying socket may have swallowed, then flush."""
        if self._replay_timer is not None:
            self._replay_timer.cancel()
            self._replay_timer = None
        if self._state != "open":
            return
        self._replay_left = 0
        # A frame written to a dying socket may never have reached the server. If the replay
        # holds no answer to it, the server never read it (every frame gets an answer), so
        # sending it again cannot duplicate it.
        resend: List[Frame] = []
        for p in self._pending():
            if not p.sent or p.acked:
                continue
            p.resends += 1
            if p.resends <= MAX_RESENDS:
                resend.append(p.frame)
                continue
            self._forget(p)
            why = "The connection kept dropping before the server answered"
            p._fail(AgentError("delivery_failed", why, retryable=True, id=p.id))
        self._transport.outbox.extendleft((f, None) for f in reversed(resend))
        self._transport.wake()

    def _dispatch(self, frame: Frame) -> None:
        self._emit("frame", frame)
        # A frame that answers another socket of the conversation (its pong, an error about
        # its frame, its `connected`) only counts for seq: it is no answer to anything here.
        target = frame.get("socket")
        if isinstance(target, str) and target not in self._own_sockets:
            return
        fid = frame.get("id")
        ask = self._asks.get(fid) if isinstance(fid, str) else None
        if ask is not None:
            ask.acked = True
        kind = frame.get("type")
        if kind == "error":
            self._emit("error", AgentError.from_frame(frame))
            call = next((c for c in self._calls if c.id == fid), None) if ask is None else None
            if call is not None:
                self._calls.remove(call)
                call._fail(AgentError.from_frame(frame))
        elif kind == "notification":
            if frame.get("event") == "session_timeout":
                self._session_ended = True
            if frame.get("event") == "presence":
                if isinstance(frame.get("sockets"), int):
                    self._sockets = frame["sockets"]
                self._emit("presence", frame)
            self._settle_call(frame)
        elif kind == "pong":
            self._settle_call(frame)
        # Every frame with the id of a query belongs to it, including types this client does
        # not know yet (v1.1 `reasoning`, `tool_call`, `tool_result`): they go to ask.frames().
        if ask is not None and ask._feed(frame):
            self._asks.pop(ask.id, None)

    def _settle_call(self, frame: Frame) -> None:
        fid = frame.get("id")
        for call in self._calls:
            # feedback_received may come without an id; then pending feedback settles in order.
            mine = call.id == fid if fid is not None else call.frame.get("type") == "feedback"
            if mine and call.matches(frame):
                self._calls.remove(call)
                if not call.future.done():
                    call.future.set_result(frame)
                return

    # -----------------------------------------------------------------------------------------
    # Outgoing frames

    async def _call(
        self,
        id: str,
        frame: Frame,
        matches: Callable[[Frame], bool],
        on_sent: Optional[Callable[[], None]] = None,
    ) -> Frame:
        call = _Call(id, frame, matches)

        def sent() -> None:
            call.sent = True
            if on_sent is not None:
                on_sent()

        self._enqueue(frame, sent)
        self._calls.append(call)
        try:
            return await call.future
        finally:
            if call in self._calls:
                self._calls.remove(call)

    def _can_send(self) -> bool:
        return (
            self._state == "open"
            and self._handshaken
            and self._replay_left == 0
            and self._transport.socket is not None
        )

    def _enqueue(self, frame: Frame, on_sent: Optional[Callable[[], None]]) -> None:
        if self._state == "closed":
            raise AgentError("closed", "The client is closed")
        outbox = self._transport.outbox
        if not self._can_send() and len(outbox) >= self._max_offline_queue:
            raise AgentError(
                "offline_queue_full",
                f"Offline queue is full ({self._max_offline_queue} frames)",
                retryable=True,
            )
        outbox.append((frame, on_sent))
        self._transport.wake()

    def _pending(self) -> List[Union[Ask, _Call]]:
        return [*self._asks.values(), *self._calls]

    def _forget(self, p: Union[Ask, _Call]) -> None:
        if isinstance(p, Ask):
            if self._asks.get(p.id) is p:
                del self._asks[p.id]
        elif p in self._calls:
            self._calls.remove(p)

    def _fail_sent(self, error: AgentError, unacked_only: bool = False) -> None:
        """Fails what the server may have had; frames never sent stay queued."""
        for p in self._pending():
            if p.sent and not (unacked_only and p.acked):
                self._forget(p)
                p._fail(error.with_id(p.id))

    def _check_limits(self, frame: Frame) -> None:
        """Refuses a query the server would refuse for size, rather than risk a 1009 close."""
        limits = self._server_info.get("limits") or {}
        max_chars = limits.get("max_content_chars")
        max_bytes = limits.get("max_message_bytes")
        too_long = isinstance(max_chars, int) and len(frame["content"]) > max_chars
        if not too_long and isinstance(max_bytes, int):
            size = len(json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode())
            too_long = size > max_bytes
        if too_long:
            raise AgentError(
                "message_too_large", "Query exceeds the server's size limits", id=frame["id"]
            )

    # -----------------------------------------------------------------------------------------
    # Events

    def _emit(self, event: str, payload: Any) -> None:
        for listener in list(self._listeners[event]):
            try:
                listener(payload)
            except Exception:
                # A throwing listener must not corrupt the client's state.
                log.exception("agent_websocket %s listener failed", event)

