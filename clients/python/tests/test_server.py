"""The client against the real agent_websocket server.

Run by tests/python_client_test.ts, which starts the server (with auth on) and the OpenRouter
simulator, a TCP proxy in front of the server, and a control server, and passes them in:

- AGENT_WS_URL: the server; AGENT_WS_PROXY_URL: the same server through the proxy;
- AGENT_WS_CONTROL_URL: POST /cut cuts every proxied connection (no close frame),
  POST /blackhole stops proxied traffic (connections stay open, new ones are refused) and
  POST /heal restores it, POST /restart restarts the
  server on the same port (the in-memory sessions are gone);
- AGENT_WS_TOKEN: a valid access token.

The simulator answers "[slow]" with SLOW_TOKENS, 15 ms apart, and "[credits]" with HTTP 402;
anything else with its default reply.
"""

import asyncio
import json
import os
import unittest
import urllib.request
import uuid

import websockets

from agent_websocket import SUBPROTOCOL, AgentClient, AgentError, resume_url

URL = os.environ.get("AGENT_WS_URL")
PROXY_URL = os.environ.get("AGENT_WS_PROXY_URL")
CONTROL_URL = os.environ.get("AGENT_WS_CONTROL_URL")
TOKEN = os.environ.get("AGENT_WS_TOKEN")

SLOW_TOKENS = [f"s{i} " for i in range(40)]
FAST = dict(initial_delay_s=0.02, max_delay_s=0.1, max_attempts=100, connect_timeout_s=3)
DEADLINE_S = 10


async def control(action):
    def post():
        request = urllib.request.Request(f"{CONTROL_URL}/{action}", method="POST")
        with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
            response.read()

    await asyncio.to_thread(post)


def within(awaitable, seconds=DEADLINE_S):
    return asyncio.wait_for(awaitable, seconds)


async def first_delta(ask):
    async for delta in ask:
        return delta


@unittest.skipUnless(URL and PROXY_URL and CONTROL_URL and TOKEN,
                     "needs the server: run `deno task test` (tests/python_client_test.ts)")
class ServerTest(unittest.IsolatedAsyncioTestCase):
    async def test_streams_an_answer_whose_deltas_join_to_the_final_content(self):
        async with AgentClient(URL, TOKEN, **FAST) as client:
            self.assertEqual(client.state, "open")
            ask = client.ask("hello from python")
            deltas = [d async for d in ask]
            final = await within(ask)
            statuses = [f["state"] async for f in ask.frames() if f["type"] == "status"]
        self.assertGreater(len(deltas), 5, "streamed in pieces")
        self.assertEqual("".join(deltas), final["content"])
        self.assertTrue(final["content"].startswith('Simulated answer to "hello from python"'))
        self.assertEqual(final["finish_reason"], "stop")
        self.assertIn("thinking", statuses)
        self.assertIsInstance(final["usage"]["completion_tokens"], int)

    async def test_commands_answer_with_their_notifications(self):
        async with AgentClient(URL, TOKEN, **FAST) as client:
            ask = client.ask("remember this")
            await within(ask)
            history = await within(client.history())
            self.assertEqual([m["role"] for m in history], ["user", "assistant"])
            self.assertEqual(history[0]["content"], "remember this")
            stats = await within(client.stats())
            self.assertEqual((stats["event"], stats["queries"], stats["responses"]),
                             ("stats", 1, 1))
            feedback = await within(client.feedback(ask.id, "up", "clear"))
            self.assertEqual(feedback["event"], "feedback_received")
            self.assertEqual((await within(client.reset()))["event"], "reset")
            self.assertEqual(await within(client.history()), [])
            with self.assertRaises(AgentError) as caught:
                await within(client.command("teleport"))
            self.assertEqual(caught.exception.code, "unknown_command")
            self.assertGreaterEqual(await within(client.ping()), 0)

    async def test_cancel_ends_the_answer_with_the_text_streamed_so_far(self):
        async with AgentClient(URL, TOKEN, **FAST) as client:
            ask = client.ask("[slow] too long to wait for")
            deltas = []
            async for delta in ask:
                deltas.append(delta)
                if len(deltas) == 3:
                    await within(ask.cancel())
            final = await within(ask)
        self.assertEqual(final["finish_reason"], "cancelled")
        self.assertEqual(final["content"], "".join(deltas))
        self.assertLess(len(deltas), len(SLOW_TOKENS))

    async def test_an_error_terminal_frame_raises_a_typed_agent_error(self):
        async with AgentClient(URL, TOKEN, **FAST) as client:
            ask = client.ask("[credits] an expensive question")
            with self.assertRaises(AgentError) as awaited:
                await within(ask)
            err = awaited.exception
            self.assertEqual((err.code, err.retryable, err.id),
                             ("insufficient_credits", False, ask.id))
            self.assertIsNone(err.retry_after_ms)
            with self.assertRaises(AgentError) as iterated:
                async for _ in ask:
                    pass
            self.assertIs(iterated.exception, err)
            # The session is fine: the next question is answered.
            self.assertEqual((await within(client.ask("still there?")))["finish_reason"], "stop")

    async def test_a_network_cut_mid_answer_resumes_with_no_delta_lost_or_repeated(self):
        client = AgentClient(PROXY_URL, TOKEN, **FAST)
        seqs, opens = [], []
        client.on("frame", lambda f: f["seq"] > 0 and seqs.append(f["seq"]))
        client.on("open", opens.append)
        async with client:
            session_id = client.session_id
            ask = client.ask("[slow] count for me")
            deltas = []
            async for delta in ask:
                deltas.append(delta)
                if len(deltas) == 5:
                    await control("cut")
            final = await within(ask)
            self.assertEqual(client.session_id, session_id, "the same session throughout")
        self.assertEqual(final["content"], "".join(SLOW_TOKENS))
        self.assertEqual(deltas, SLOW_TOKENS, "every delta once, in order")
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)), "seq gapless and unique")
        self.assertTrue(any(o["resumed"] for o in opens), "it resumed")

    async def test_a_dead_link_is_found_by_the_heartbeat_and_the_answer_resumes(self):
        client = AgentClient(PROXY_URL, TOKEN, heartbeat_s=0.1, heartbeat_timeout_s=0.2, **FAST)
        closes = []
        client.on("close", closes.append)
        async with client:
            ask = client.ask("[slow] through a dead link")
            await within(first_delta(ask))
            await control("blackhole")  # TCP stays up, nothing passes: only pings can tell
            try:
                while not closes:
                    await within(asyncio.sleep(0.01))
            finally:
                await control("heal")
            final = await within(ask)
        self.assertTrue(closes[0]["will_reconnect"])
        self.assertEqual(final["content"], "".join(SLOW_TOKENS))

    async def test_an_ask_in_flight_on_a_lost_session_fails_instead_of_hanging(self):
        async with AgentClient(URL, TOKEN, **FAST) as client:
            first_session = client.session_id
            sessions, errors = [], []
            client.on("session", sessions.append)
            client.on("error", lambda e: errors.append(e.code))
            ask = client.ask("[slow] a long answer")
            await within(first_delta(ask))
            await control("restart")
            with self.assertRaises(AgentError) as caught:
                await within(ask)
            self.assertEqual((caught.exception.code, caught.exception.retryable),
                             ("session_lost", True))
            self.assertNotEqual(client.session_id, first_session)
            self.assertTrue(sessions[-1]["lost"])
            final = await within(client.ask("after the restart"))
            self.assertEqual(final["finish_reason"], "stop")
            self.assertIn("not_found", errors, "the server said why")

    async def test_a_session_taken_over_ends_the_client_without_reconnecting(self):
        client = AgentClient(URL, TOKEN, **FAST)
        reconnects = []
        client.on("reconnecting", reconnects.append)
        async with client:
            ask = client.ask("[slow] to be taken over")
            await within(first_delta(ask))
            url = resume_url(URL, client.session_id, client.last_seq)
            async with websockets.connect(url, subprotocols=[SUBPROTOCOL, f"jwt-{TOKEN}"]) as other:
                resumed = json.loads(await within(other.recv()))
                self.assertEqual(resumed["event"], "resumed")
                with self.assertRaises(AgentError) as caught:
                    await within(ask)
            self.assertEqual(caught.exception.code, "session_taken_over")
            self.assertEqual(client.state, "closed")
            self.assertEqual(reconnects, [])

    async def test_a_bad_token_is_refused_without_retrying(self):
        client = AgentClient(URL, "not-a-token", **FAST)
        reconnects = []
        client.on("reconnecting", reconnects.append)
        with self.assertRaises(AgentError) as caught:
            await within(client.connect())
        self.assertEqual((caught.exception.code, caught.exception.retryable),
                         ("unauthorized", False))
        self.assertEqual((client.state, reconnects), ("closed", []))
        with self.assertRaises(AgentError) as after:
            await within(client.ask("anyone?"))
        self.assertEqual(after.exception.code, "closed")

    async def test_two_clients_of_a_conversation_see_one_answer_stream_and_presence(self):
        name = f"py-{uuid.uuid4().hex[:8]}"
        a = AgentClient(URL, TOKEN, conversation=name, **FAST)
        b = AgentClient(PROXY_URL, TOKEN, conversation=name, **FAST)
        frames_a, frames_b, opens_b = [], [], []
        a.on("frame", lambda f: f["seq"] > 0 and frames_a.append(f))
        b.on("frame", lambda f: f["seq"] > 0 and frames_b.append(f))
        b.on("open", opens_b.append)
        async with a, b:
            self.assertNotEqual(a.socket_id, b.socket_id)
            self.assertEqual(a.session_id, b.session_id)
            await within(until(lambda: a.sockets == 2 and b.sockets == 2))
            ask = a.ask("[slow] for both of us")
            deltas = []
            async for delta in ask:
                deltas.append(delta)
                if len(deltas) == 5:
                    await control("cut")  # b's network goes; b resumes on its own
            final = await within(ask)
            await within(until(lambda: any(
                f["type"] == "response" and f["id"] == ask.id and f.get("done")
                for f in frames_b)))
            self.assertTrue(a.is_own_query(ask.id))
            self.assertFalse(b.is_own_query(ask.id))
            # b asks too: a gets that answer.
            other = b.ask("and one from b")
            await within(other)
            await within(until(lambda: a.last_seq == b.last_seq))
        streamed_b = "".join(f.get("delta", "") for f in frames_b
                             if f["type"] == "response" and f["id"] == ask.id and not f["done"])
        self.assertEqual(final["content"], "".join(SLOW_TOKENS))
        self.assertEqual(streamed_b, final["content"], "b got every delta once, in order")
        seqs_b = [f["seq"] for f in frames_b]
        self.assertEqual(seqs_b, list(range(seqs_b[0], seqs_b[0] + len(seqs_b))), "gapless")
        # a saw the same frames (and, after b left, b's leaving).
        self.assertEqual(seqs_b, [f["seq"] for f in frames_a
                                  if seqs_b[0] <= f["seq"] <= seqs_b[-1]])
        self.assertTrue(any(o["resumed"] for o in opens_b), "b resumed after the cut")

    async def test_memory_commands_list_search_and_clear_conversations(self):
        name = f"py-mem-{uuid.uuid4().hex[:8]}"
        async with AgentClient(URL, TOKEN, conversation=name, **FAST) as client:
            await within(client.ask("Remember the word zanzibar"))
            listed = {c["name"]: c for c in await within(client.conversations())}
            self.assertEqual(listed[name]["messages"], 2)
            hits = await within(client.search_memory("zanzibar", limit=3))
            self.assertTrue(hits and len(hits) <= 3)
            self.assertEqual(hits[0]["conversation"], name)
            self.assertEqual(await within(client.clear_memory(name)), 1)
            hits = await within(client.search_memory("zanzibar"))
            self.assertEqual([h for h in hits if h["conversation"] == name], [])


async def until(check):
    while not check():
        await asyncio.sleep(0.01)


if __name__ == "__main__":
    unittest.main()
