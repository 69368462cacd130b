"""Conversations against a scripted server in this process: the join and resume URLs, frames
addressed to another socket of the conversation, presence, and the memory commands."""

import asyncio
import json
import unittest
from urllib.parse import parse_qs, urlsplit

from agent_websocket import AgentClient, AgentError, conversation_url, is_conversation_name

from test_protocol_edges import FAST, ScriptedServer, frame


def connected(socket, seq):
    return frame(seq, type="notification", event="connected", session_id="conv_1",
                 conversation="team", socket=socket, socket_id=socket, protocol=1)


class ConversationTest(unittest.IsolatedAsyncioTestCase):
    def test_names_and_urls(self):
        self.assertTrue(is_conversation_name("a.b:c_d-1"))
        for bad in ["", "has space", "x" * 129, "é", None]:
            self.assertFalse(is_conversation_name(bad), bad)
        self.assertEqual(
            conversation_url("https://h/f?session_id=s&last_seq=3&jwt=t", "c"),
            "wss://h/f?jwt=t&conversation=c",
        )
        self.assertEqual(conversation_url("ws://h/", "c", 0), "ws://h/?conversation=c&last_seq=0")
        with self.assertRaises(AgentError) as caught:
            AgentClient("ws://h/", conversation="bad name")
        self.assertEqual(caught.exception.code, "invalid_conversation")

    async def test_frames_for_other_sockets_count_for_seq_only(self):
        async def script(ws, n):
            await ws.send(connected("s1", 7))
            await ws.send(frame(8, type="notification", event="presence", sockets=2, joined="s2"))
            cmd = json.loads(await ws.recv())
            # Another socket's error with our command's id, and its connected: not ours.
            await ws.send(frame(9, type="error", id=cmd["id"], socket="s2", code="invalid_json",
                                message="bad frame", retryable=False))
            await ws.send(connected("s3", 10))
            await ws.send(frame(11, type="notification", event="history", id=cmd["id"],
                                socket="s1", messages=[]))
            query = json.loads(await ws.recv())
            for f in [
                frame(12, type="status", id="theirs", state="thinking"),
                frame(13, type="response", id="theirs", done=True, content="x"),
                frame(14, type="response", id=query["id"], done=True, content="y"),
            ]:
                await ws.send(f)
            await ws.wait_closed()

        async with ScriptedServer(script) as server:
            client = AgentClient(server.url + "/?session_id=ignored", conversation="team", **FAST)
            presence, errors, seen = [], [], []
            client.on("presence", lambda p: presence.append(p["sockets"]))
            client.on("error", errors.append)
            client.on("frame", lambda f: seen.append(f["seq"]))
            async with client:
                self.assertEqual((client.socket_id, client.conversation), ("s1", "team"))
                self.assertEqual(await asyncio.wait_for(client.history(), 5), [])
                self.assertEqual(errors, [], "another socket's error is not this client's")
                self.assertEqual(seen, [7, 8, 9, 10, 11], "yet every frame counts")
                ask = client.ask("hi")
                self.assertEqual((await asyncio.wait_for(ask, 5))["content"], "y")
                self.assertEqual(client.last_seq, 14)
                self.assertEqual((client.sockets, presence), (2, [2]))
                self.assertTrue(client.is_own_query(ask.id))
                self.assertFalse(client.is_own_query("theirs"))
        self.assertEqual(parse_qs(urlsplit(server.paths[0]).query), {"conversation": ["team"]})

    async def test_a_drop_resumes_with_this_sockets_last_seq(self):
        async def script(ws, n):
            if n == 0:
                await ws.send(connected("s1", 3))
                query = json.loads(await ws.recv())
                script.qid = query["id"]
                await ws.send(frame(4, type="status", id=query["id"], state="thinking"))
                await asyncio.sleep(0.05)
                ws.transport.abort()  # no close frame: a dropped network
                return
            await ws.send(frame(0, type="notification", event="resumed", replayed=1,
                                conversation="team", socket_id="s1b"))
            await ws.send(frame(5, type="response", id=script.qid, done=True, content="ok"))
            await ws.wait_closed()

        async with ScriptedServer(script) as server:
            async with AgentClient(server.url, conversation="team", **FAST) as client:
                opens = []
                client.on("open", opens.append)
                ask = client.ask("hello")
                self.assertEqual((await asyncio.wait_for(ask, 5))["content"], "ok")
                self.assertEqual((client.socket_id, client.last_seq), ("s1b", 5))
        resume = parse_qs(urlsplit(server.paths[1]).query)
        self.assertEqual(resume, {"conversation": ["team"], "last_seq": ["4"]})
        self.assertEqual(opens[-1]["socket_id"], "s1b")
        self.assertTrue(opens[-1]["resumed"])

    async def test_memory_commands(self):
        summary = {"name": "team", "messages": 2, "updated_at": "2026-01-01T00:00:00Z"}

        async def script(ws, n):
            await ws.send(connected("s1", 1))
            seq = 1
            async for raw in ws:
                cmd = json.loads(raw)
                seq += 1
                name, args = cmd["name"], cmd.get("args")
                if name == "conversations":
                    await ws.send(frame(seq, type="notification", event="conversations",
                                        id=cmd["id"], conversations=[summary]))
                elif name == "search_memory":
                    await ws.send(frame(seq, type="error", id=cmd["id"], code="unknown_command",
                                        message=f"no {args}", retryable=False))
                else:
                    await ws.send(frame(seq, type="notification", event="memory_cleared",
                                        id=cmd["id"], cleared=5, **(args or {})))

        async with ScriptedServer(script) as server:
            async with AgentClient(server.url + "/?conversation=team", **FAST) as client:
                self.assertEqual(client.conversation, "team", "taken from the URL")
                self.assertEqual(await asyncio.wait_for(client.conversations(), 5), [summary])
                with self.assertRaises(AgentError) as caught:
                    await asyncio.wait_for(client.search_memory("lisbon", limit=3), 5)
                self.assertEqual(caught.exception.code, "unknown_command")
                self.assertIn("'limit': 3", caught.exception.message)
                self.assertEqual(await asyncio.wait_for(client.clear_memory("old"), 5), 5)


if __name__ == "__main__":
    unittest.main()
