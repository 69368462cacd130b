/**
 * Bounds that hold whatever a client or the network does: connection slots
 * that come back after a reset handshake, sessions per user and replay memory
 * per process, sockets that end with their token, answers that cannot grow
 * without end, readers that stall, feedback that cannot pile up.
 */
import { assert, assertEquals } from "./assert.ts";
import { deadline, eventually, startStack, TestClient } from "./helpers.ts";
import { startTcpProxy } from "./tcp_proxy.ts";
import { hs256, startAuthServer } from "./auth_server.ts";

/** Upgrade requests whose connections are reset (SO_LINGER 0) before the 101 is read. */
async function resetHandshakes(port: number, n: number): Promise<void> {
  const script = `
import socket, struct
for _ in range(${n}):
    s = socket.create_connection(("127.0.0.1", ${port}))
    s.send(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
           b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
`;
  const out = await new Deno.Command("python3", { args: ["-c", script] }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
}

async function health(url: string) {
  return await (await fetch(`${url}/health`)).json();
}

Deno.test("upgrades reset before their 101 give their slots back, and shutdown does not hang", async () => {
  const stack = await startStack({ MAX_CONNECTIONS: "5", HANDSHAKE_TIMEOUT_SECONDS: "0.3" });
  let closed = false;
  try {
    await resetHandshakes(stack.server.port, 5);
    const h = await health(stack.server.url);
    assert(h.connections > 0, `the resets hold slots at first (${h.connections})`);
    // After the handshake timeout every slot is back, and a real client gets in.
    let back = false;
    for (let i = 0; i < 50 && !back; i++) {
      await new Promise((r) => setTimeout(r, 50));
      back = (await health(stack.server.url)).connections === 0;
    }
    assert(back, "slots came back");
    const { client } = await TestClient.open(stack.wsUrl);
    await client.close();
    await resetHandshakes(stack.server.port, 3);
    await deadline(stack.close(), 8000, "shutdown with reset handshakes pending");
    closed = true;
  } finally {
    if (!closed) await stack.close();
  }
});

Deno.test("a user's sessions are bounded: the oldest waiting for a resume makes room, honestly", async () => {
  const stack = await startStack({ MAX_SESSIONS_PER_USER: "3", RESUME_WINDOW_SECONDS: "60" });
  try {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { client, connected } = await TestClient.open(stack.wsUrl);
      ids.push(connected.session_id);
      await client.close();
    }
    assertEquals(stack.server.app.sessions.size, 3);
    const { client: fourth } = await TestClient.open(stack.wsUrl);
    assertEquals(stack.server.app.sessions.size, 3, "still three");
    assert(stack.server.app.sessions.get(ids[0]) === undefined, "the oldest detached one went");
    const lost = await TestClient.connect(`${stack.wsUrl}?session_id=${ids[0]}&last_seq=1`);
    const err = await lost.waitFor((f) => f.type === "error");
    assertEquals(err.code, "not_found", "its resume says so");
    const kept = await TestClient.connect(`${stack.wsUrl}?session_id=${ids[2]}&last_seq=1`);
    await kept.waitFor((f) => f.event === "resumed");
    // Three connected sessions (the lost one's socket got a fresh one): none can be pushed out.
    const extra = await TestClient.connect(stack.wsUrl);
    const refused = await extra.waitFor((f) => f.type === "error");
    assertEquals([refused.code, refused.seq], ["too_many_connections", 0]);
    assertEquals((await extra.closed).code, 4029);
    await fourth.close();
    await kept.close();
    await lost.close();
  } finally {
    await stack.close();
  }
});

Deno.test("replay memory per process is bounded: the oldest detached sessions go first", async () => {
  const stack = await startStack({
    REPLAY_MEMORY_BYTES: "65536",
    RESUME_WINDOW_SECONDS: "60",
    SWEEP_INTERVAL_SECONDS: "0.05",
  });
  try {
    const big = "x".repeat(2000);
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const { client, connected } = await TestClient.open(stack.wsUrl);
      stack.sim.script({ kind: "stream", tokens: Array(10).fill(big) });
      await client.terminal(client.query(`big ${i}`));
      ids.push(connected.session_id);
      await client.close();
    }
    await eventually(
      () => stack.server.app.sessions.get(ids[0]) === undefined,
      "the oldest session evicted",
    );
    assert(stack.server.app.sessions.get(ids[5]) !== undefined, "the newest is kept");
    assert(stack.logs.some((l) => l.includes('"memory_budget"')), "eviction logged with why");
  } finally {
    await stack.close();
  }
});

Deno.test("a socket ends with its token: token_expired, close 4003, and a fresh token resumes", async () => {
  const auth = await startAuthServer();
  const secret = "limits-test-hs256-secret-0123456789ab";
  const stack = await startStack({
    AUTH_MODE: "supabase",
    SUPABASE_URL: auth.url,
    JWT_SECRET: secret,
    JWT_LEEWAY_SECONDS: "0",
  });
  try {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const short = await hs256(auth, secret, { exp });
    const client = await TestClient.connect(stack.wsUrl, ["agent-websocket.v1", `jwt-${short}`]);
    const connected = await client.waitFor((f) => f.event === "connected");
    const expired = await client.waitFor((f) => f.code === "token_expired", "expiry", 5000);
    assertEquals([expired.type, expired.retryable, expired.seq], ["error", true, 0]);
    assertEquals((await client.closed).code, 4003);
    assert(Date.now() >= exp * 1000, "not before the token's exp");
    const fresh = await hs256(auth, secret);
    const back = await TestClient.connect(
      `${stack.wsUrl}?session_id=${connected.session_id}&last_seq=${connected.seq}`,
      ["agent-websocket.v1", `jwt-${fresh}`],
    );
    await back.waitFor((f) => f.event === "resumed");
    await back.close();
  } finally {
    await stack.close();
    await auth.close();
  }
});

Deno.test("an answer past MAX_ANSWER_CHARS ends with answer_too_large at once", async () => {
  const stack = await startStack({ MAX_ANSWER_CHARS: "100" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script({ kind: "stream", tokens: Array(1000).fill("0123456789"), gapMs: 1 });
    const id = client.query("endless");
    const err = await client.terminal(id);
    assertEquals([err.type, err.code], ["error", "answer_too_large"]);
    const text = client.framesOf(id).filter((f) => f.delta).map((f) => f.delta).join("");
    assert(text.length <= 100, `at most the cap was sent (${text.length})`);
    await eventually(() => stack.sim.openStreams === 0, "the model call released");
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("a reader that stalls past SLOW_CONSUMER_SECONDS frees the model call", async () => {
  const stack = await startStack({
    SEND_HIGH_WATER_BYTES: "16384",
    SEND_HARD_LIMIT_BYTES: "104857600",
    SLOW_CONSUMER_SECONDS: "0.5",
    MAX_ANSWER_CHARS: "100000000",
    UPSTREAM_TOTAL_TIMEOUT_SECONDS: "300",
  });
  const proxy = startTcpProxy(stack.server.port);
  try {
    const { client, connected } = await TestClient.open(`ws://127.0.0.1:${proxy.port}`);
    stack.sim.script({ kind: "stream", tokens: Array(100_000).fill("y".repeat(4096)), gapMs: 1 });
    const id = client.query("flood");
    await client.waitFor((f) => f.id === id && f.delta !== undefined, "streaming");
    proxy.stopReading = true;
    const started = performance.now();
    await eventually(() => stack.sim.openStreams === 0, "the model call released", 20_000);
    const took = performance.now() - started;
    assert(took < 15_000, `released long before the total timeout (${took.toFixed(0)} ms)`);
    assert(stack.logs.some((l) => l.includes('"code":"slow_consumer"')), "ended as slow_consumer");
    proxy.stopReading = false;
    assertEquals((await deadline(client.closed, 10_000, "close")).code, 1013);
    const again = await TestClient.connect(
      `${stack.wsUrl}?session_id=${connected.session_id}&last_seq=${client.frames.at(-1)!.seq}`,
    );
    const terminal = await again.terminal(id, 10_000);
    assertEquals(terminal.code, "slow_consumer");
    await again.close();
  } finally {
    await proxy.close();
    await stack.close();
  }
});

Deno.test("feedback is counted by the rate limit", async () => {
  const stack = await startStack({ RATE_LIMIT_BURST: "3", RATE_LIMIT_PER_MINUTE: "1" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    const id = client.query("one");
    await client.terminal(id);
    const answers = [];
    for (let i = 0; i < 3; i++) {
      client.send({ type: "feedback", id, rating: "up", comment: `#${i}` });
      answers.push(await client.next((f) => f.id === id));
    }
    assertEquals(answers.map((f) => f.event ?? f.code), [
      "feedback_received",
      "feedback_received",
      "rate_limited",
    ]);
    assertEquals(answers[2].retryable, true);
    client.send({ type: "command", name: "stats", id: "s" });
    assertEquals((await client.waitFor((f) => f.id === "s")).feedback, 1, "one response rated");
    await client.close();
  } finally {
    await stack.close();
  }
});
