"""Protocol edges a real server does not produce on demand, against a scripted server in
this process: frame types this client does not know, and a replay that overlaps what the
client already has."""

import asyncio
import json
import unittest
from urllib.parse import parse_qs, urlsplit

import websockets

from agent_websocket import AgentClient

FAST = dict(initial_delay_s=0.01, max_delay_s=0.05, max_attempts=20, connect_timeout_s=2)


def frame(seq, **fields):
    return json.dumps({"seq": seq, "timestamp": "2026-01-01T00:00:00.000Z", **fields})


def connected(session_id="s1"):
    return frame(1, type="notification", event="connected", session_id=session_id,
                 content=f"Connected. Session ID: {session_id}", protocol=1)


def request_path(ws):
    # websockets 10-12 keep the path on the connection; 13+ on its request.
    return getattr(ws, "path", None) or ws.request.path


class ScriptedServer:
    """Runs `script(ws, n)` for the n-th connection (0-based)."""

    def __init__(self, script):
        self.script = script
        self.paths = []

    async def __aenter__(self):
        async def handler(ws, *_):
            n = len(self.paths)
            self.paths.append(request_path(ws))
            await self.script(ws, n)

        self.server = await websockets.serve(handler, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


class ProtocolEdgesTest(unittest.IsolatedAsyncioTestCase):
    async def test_unknown_frame_types_reach_ask_frames_and_do_not_disturb_the_answer(self):
        async def script(ws, n):
            await ws.send(connected())
            qid = json.loads(await ws.recv())["id"]
            for f in [
                frame(2, type="status", id=qid, state="thinking", content="Thinking..."),
                frame(3, type="reasoning", id=qid, delta="The user wants the time."),
                frame(4, type="tool_call", id=qid, tool_call_id="c1", tool="clock",
                      arguments={}, iteration=1, executor="server", needs_approval=False),
                frame(5, type="tool_result", id=qid, tool_call_id="c1", tool="clock", ok=True,
                      result="12:00", duration_ms=3),
                frame(6, type="x_from_the_future", id=qid, anything=[1, 2]),
                frame(7, type="x_from_the_future"),
                frame(0, type="notification", event="x_socket_news"),
                frame(8, type="response", id=qid, delta="It is ", done=False),
                frame(9, type="response", id=qid, delta="noon.", done=False),
                frame(10, type="response", id=qid, done=True, content="It is noon.",
                      finish_reason="stop"),
            ]:
                await ws.send(f)
            await ws.wait_closed()

        async with ScriptedServer(script) as server:
            async with AgentClient(server.url, **FAST) as client:
                ask = client.ask("what time is it?")
                deltas = [d async for d in ask]
                final = await asyncio.wait_for(ask, 5)
                kinds = [f["type"] async for f in ask.frames()]
                self.assertEqual(deltas, ["It is ", "noon."])
                self.assertEqual(final["content"], "It is noon.")
                self.assertEqual(kinds, ["status", "reasoning", "tool_call", "tool_result",
                                         "x_from_the_future", "response", "response", "response"])
                self.assertEqual(client.last_seq, 10)
                self.assertEqual(client.state, "open")

    async def test_an_overlapping_replay_is_deduplicated_by_seq(self):
        delivered_b = asyncio.Event()

        async def script(ws, n):
            if n == 0:
                await ws.send(connected())
                qid = json.loads(await ws.recv())["id"]
                await ws.send(frame(2, type="status", id=qid, state="thinking"))
                await ws.send(frame(3, type="response", id=qid, delta="a", done=False))
                await ws.send(frame(4, type="response", id=qid, delta="b", done=False))
                await delivered_b.wait()
                ws.transport.abort()  # no close frame: a dropped network
                return
            qid = script.qid
            await ws.send(frame(0, type="notification", event="resumed", session_id="s1",
                                replayed=4))
            # A replay from an older point than asked: frames 3 and 4 again, then new ones.
            for f in [
                frame(3, type="response", id=qid, delta="a", done=False),
                frame(4, type="response", id=qid, delta="b", done=False),
                frame(5, type="response", id=qid, delta="c", done=False),
                frame(6, type="response", id=qid, done=True, content="abc"),
            ]:
                await ws.send(f)
            await ws.wait_closed()

        async with ScriptedServer(script) as server:
            async with AgentClient(server.url, **FAST) as client:
                opens = []
                client.on("open", opens.append)
                ask = client.ask("letters", id="q-letters")
                script.qid = ask.id
                deltas = []
                async for d in ask:
                    deltas.append(d)
                    if d == "b":
                        delivered_b.set()
                final = await asyncio.wait_for(ask, 5)
        self.assertEqual("".join(deltas), "abc")
        self.assertEqual(final["content"], "abc")
        resume = parse_qs(urlsplit(server.paths[1]).query)
        self.assertEqual(resume, {"session_id": ["s1"], "last_seq": ["4"]})
        self.assertEqual(opens[-1], {"session_id": "s1", "resumed": True, "replayed": 4})


if __name__ == "__main__":
    unittest.main()
