// The client's side of conversations without a server: an in-memory WebSocket lets each test
// play the server's frames exactly, including the awkward ones (another socket's pong with our
// query id, a replay addressed to this client's previous socket).
import { AgentClient } from "./agent_client.ts";
import { checkConversation, conversationUrl } from "./conversation.ts";
import { AgentError } from "./errors.ts";
import type { WebSocketConstructor } from "./transport.ts";

function assertEquals<T>(actual: T, expected: T, what = "") {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  if (a !== e) {
    throw new Error(`${what ? `${what}: ` : ""}expected ${e}, got ${a}`);
  }
}

/** A socket the test drives: it records what the client sends and delivers what `push` gives. */
class FakeSocket {
  static all: FakeSocket[] = [];
  readonly sent: Record<string, unknown>[] = [];
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: unknown = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {}
  push(frame: Record<string, unknown>) {
    this.onmessage?.({ data: JSON.stringify({ timestamp: "t", ...frame }) });
  }
  /** The server side drops the socket (the client will reconnect). */
  drop() {
    this.onclose?.({ code: 1006, reason: "" });
  }
}

const FAST = {
  WebSocket: FakeSocket as unknown as WebSocketConstructor,
  reconnect: { initialDelayMs: 1, maxDelayMs: 2, maxAttempts: 5 },
  heartbeat: false as const,
};

function latest(): FakeSocket {
  return FakeSocket.all.at(-1)!;
}

async function until(check: () => boolean, what: string) {
  for (let i = 0; i < 200 && !check(); i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  if (!check()) throw new Error(`timed out waiting for ${what}`);
}

const connected = (socket: string, seq: number) => ({
  type: "notification",
  event: "connected",
  seq,
  socket,
  socket_id: socket,
  session_id: "conv_1",
  conversation: "team",
});

Deno.test("conversation: names are checked and the URL joins, then resumes, without session_id", () => {
  assertEquals(checkConversation("a.b:c_d-1"), "a.b:c_d-1");
  for (const bad of ["", "has space", "x".repeat(129), "é"]) {
    let code = "";
    try {
      checkConversation(bad);
    } catch (e) {
      code = (e as AgentError).code;
    }
    assertEquals(code, "invalid_conversation", bad);
  }
  assertEquals(
    conversationUrl(
      "https://h/functions/v1/agent_websocket?session_id=s&last_seq=3&jwt=t",
      "c",
    ),
    "wss://h/functions/v1/agent_websocket?jwt=t&conversation=c",
  );
  assertEquals(
    conversationUrl("ws://h/", "c", 0),
    "ws://h/?conversation=c&last_seq=0",
  );
  let code = "";
  try {
    new AgentClient("ws://h/", { ...FAST, conversation: "bad name" });
  } catch (e) {
    code = (e as AgentError).code;
  }
  assertEquals(
    code,
    "invalid_conversation",
    "the constructor refuses a bad name",
  );
});

Deno.test("conversation: frames for other sockets count for seq only; presence and own queries", async () => {
  FakeSocket.all = [];
  const client = new AgentClient("ws://h/?session_id=ignored", {
    ...FAST,
    conversation: "team",
  });
  try {
    const opened = client.connect();
    const ws = latest();
    assertEquals(ws.url, "ws://h/?conversation=team");
    ws.push(connected("s1", 7));
    await opened;
    assertEquals([client.socketId, client.conversation, client.lastSeq], [
      "s1",
      "team",
      7,
    ]);

    const presence: number[] = [];
    client.on("presence", (p) => presence.push(p.sockets));
    const pongs: unknown[] = [];
    client.on("pong", (p) => pongs.push(p.id));
    const errors: string[] = [];
    client.on("error", (e) => errors.push(e.code));
    const responses: [string, boolean][] = [];
    client.on(
      "response",
      (r) => r.done && responses.push([r.id, client.isOwnQuery(r.id)]),
    );

    ws.push({
      type: "notification",
      event: "presence",
      seq: 8,
      sockets: 2,
      joined: "s2",
    });
    assertEquals([client.sockets, presence], [2, [2]]);

    // Our ping and a command; another socket's pong and error reuse their ids, as a hostile or
    // buggy peer might: neither may settle anything here.
    const ping = client.ping();
    const history = client.history();
    const [pingFrame, historyFrame] = ws.sent as { id: string }[];
    ws.push({ type: "pong", seq: 9, id: pingFrame.id, socket: "s2" });
    ws.push({
      type: "error",
      seq: 10,
      id: historyFrame.id,
      socket: "s2",
      code: "invalid_json",
    });
    ws.push(connected("s3", 11));
    assertEquals(
      [client.lastSeq, pongs.length, errors],
      [11, 0, []],
      "foreign frames",
    );
    ws.push({ type: "pong", seq: 12, id: pingFrame.id, socket: "s1" });
    ws.push({
      type: "notification",
      event: "history",
      seq: 13,
      id: historyFrame.id,
      messages: [],
    });
    await ping;
    assertEquals((await history).event, "history");

    // Another socket's query streams here too; ours is told apart.
    const mine = client.ask("hi");
    ws.push({ type: "status", seq: 14, id: "theirs", state: "thinking" });
    ws.push({
      type: "response",
      seq: 15,
      id: "theirs",
      delta: "a",
      done: false,
    });
    ws.push({
      type: "response",
      seq: 16,
      id: "theirs",
      content: "a",
      done: true,
    });
    ws.push({
      type: "response",
      seq: 17,
      id: mine.id,
      content: "b",
      done: true,
    });
    assertEquals((await mine.response).content, "b");
    assertEquals(responses, [["theirs", false], [mine.id, true]]);
    assertEquals(client.isOwnQuery(mine.id), true, "remembered after it ended");
  } finally {
    client.close();
  }
});

Deno.test("conversation: a drop resumes with this socket's last_seq; the replay is its own", async () => {
  FakeSocket.all = [];
  const client = new AgentClient("ws://h/", { ...FAST, conversation: "team" });
  try {
    const opened = client.connect();
    latest().push(connected("s1", 3));
    await opened;
    const ping = client.ping();
    const pingId = (latest().sent[0] as { id: string }).id;
    const answer = client.ask("hello");
    latest().push({ type: "status", seq: 4, id: answer.id, state: "thinking" });
    latest().drop();
    await until(() => FakeSocket.all.length === 2, "the reconnect");
    const ws = latest();
    assertEquals(ws.url, "ws://h/?conversation=team&last_seq=4");
    const opens: unknown[] = [];
    client.on("open", (e) => opens.push([e.resumed, e.socketId]));
    ws.push({
      type: "notification",
      event: "resumed",
      seq: 0,
      replayed: 2,
      socket_id: "s1b",
      conversation: "team",
    });
    // The replay holds the pong the old socket never got, addressed to it.
    ws.push({ type: "pong", seq: 5, id: pingId, socket: "s1" });
    ws.push({
      type: "response",
      seq: 6,
      id: answer.id,
      content: "hi",
      done: true,
    });
    await ping;
    assertEquals((await answer.response).content, "hi");
    assertEquals([client.socketId, client.lastSeq, opens], ["s1b", 6, [[
      true,
      "s1b",
    ]]]);
  } finally {
    client.close();
  }
});

Deno.test("conversation: memory commands resolve with their typed answer or reject", async () => {
  FakeSocket.all = [];
  const client = new AgentClient("ws://h/?conversation=team", FAST);
  try {
    const opened = client.connect();
    const ws = latest();
    ws.push(connected("s1", 1));
    await opened;
    assertEquals(client.conversation, "team", "taken from the URL");
    const list = client.conversations();
    const search = client.searchMemory("lisbon", { limit: 3 });
    const clear = client.clearMemory("old");
    const cmds = ws.sent as { id: string; name: string; args?: unknown }[];
    assertEquals(cmds.map((c) => [c.name, c.args]), [
      ["conversations", undefined],
      ["search_memory", { query: "lisbon", limit: 3 }],
      ["clear_memory", { conversation: "old" }],
    ]);
    const summary = {
      name: "team",
      messages: 2,
      updated_at: "2025-01-01T00:00:00Z",
    };
    ws.push({
      type: "notification",
      event: "conversations",
      seq: 2,
      id: cmds[0].id,
      conversations: [summary],
    });
    ws.push({
      type: "error",
      seq: 3,
      id: cmds[1].id,
      code: "unknown_command",
      message: "no",
    });
    ws.push({
      type: "notification",
      event: "memory_cleared",
      seq: 4,
      id: cmds[2].id,
      conversation: "old",
      cleared: 5,
    });
    assertEquals((await list).conversations, [summary]);
    assertEquals(
      await search.then(() => "", (e: AgentError) => e.code),
      "unknown_command",
    );
    assertEquals((await clear).cleared, 5);
  } finally {
    client.close();
  }
});
