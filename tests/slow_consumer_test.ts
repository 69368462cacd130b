import { assert, assertEquals } from "./assert.ts";
import { eventually, startStack, TestClient } from "./helpers.ts";
import { startTcpProxy } from "./tcp_proxy.ts";

const BIG = "x".repeat(8192);
const HIGH_WATER = 32_768;

Deno.test("a client that stops reading pauses the upstream and loses nothing when it resumes reading", async () => {
  const stack = await startStack({
    SEND_HIGH_WATER_BYTES: String(HIGH_WATER),
    SEND_HARD_LIMIT_BYTES: "1048576",
    UPSTREAM_TOTAL_TIMEOUT_SECONDS: "60",
    MAX_ANSWER_CHARS: "100000000",
    SLOW_CONSUMER_SECONDS: "600",
  });
  const proxy = startTcpProxy(stack.server.port);
  try {
    const { client, connected } = await TestClient.open(`ws://127.0.0.1:${proxy.port}`);
    const tokens = Array.from({ length: 4000 }, (_, i) => `${i}:${BIG}`);
    stack.sim.script({ kind: "stream", tokens, gapMs: 0 });
    const session = stack.server.app.sessions.get(connected.session_id)!;
    proxy.stopReading = true;
    const id = client.query("a very long answer");
    // The server's queue for this socket climbs to the high-water mark, then the
    // generation stops reading the upstream: what it holds stops growing.
    await eventually(
      () => (session.socket?.bufferedAmount ?? 0) > HIGH_WATER,
      "send queue to fill",
      10_000,
    );
    let held = session.turns.inFlight!.content.length;
    await eventually(
      () => {
        const now = session.turns.inFlight!.content.length;
        const still = now === held;
        held = now;
        return still;
      },
      "upstream reading to pause",
      5000,
    );
    assert(held < tokens.join("").length / 2, `paused after ${held} chars, not at the end`);
    assert(
      session.socket!.bufferedAmount < HIGH_WATER + 2 * (BIG.length + 200),
      `send queue bounded: ${session.socket!.bufferedAmount}`,
    );
    proxy.stopReading = false;
    const final = await client.terminal(id, 30_000);
    assertEquals(final.content, tokens.join(""));
    const streamed = client.framesOf(id).filter((f) => f.delta !== undefined);
    assertEquals(streamed.map((f) => f.delta).join(""), tokens.join(""), "coalesced, nothing lost");
    assert(streamed.length < tokens.length, `deltas were coalesced (${streamed.length} frames)`);
    await client.close();
  } finally {
    await proxy.close();
    await stack.close();
  }
});

Deno.test("past the hard limit a client that does not read gets slow_consumer and close 1013", async () => {
  const stack = await startStack({
    SEND_HIGH_WATER_BYTES: "16384",
    SEND_HARD_LIMIT_BYTES: "65536",
    RESUME_WINDOW_SECONDS: "5",
    MAX_ANSWER_CHARS: "100000000",
    SLOW_CONSUMER_SECONDS: "600",
  });
  const proxy = startTcpProxy(stack.server.port);
  try {
    const { client, connected } = await TestClient.open(`ws://127.0.0.1:${proxy.port}`);
    stack.sim.script({ kind: "stream", tokens: Array(100_000).fill(BIG), gapMs: 1 });
    const id = client.query("endless");
    await client.waitFor((f) => f.id === id && f.delta !== undefined, "streaming");
    proxy.stopReading = true;
    // It keeps sending but never reads: every pong piles up on the server.
    const pad = "p".repeat(2000);
    const flood = setInterval(() => {
      for (let i = 0; i < 20; i++) client.send({ type: "ping", id: pad });
    }, 5);
    try {
      await eventually(
        () => stack.logs.some((l) => l.includes('"slow_consumer"')),
        "the server to give up on the client",
        20_000,
      );
    } finally {
      clearInterval(flood);
    }
    await eventually(() => stack.sim.openStreams === 0, "upstream aborted");
    proxy.stopReading = false;
    // 1013 when the close frame gets through the backlog, else an abnormal close.
    const close = await client.closed;
    assert([1013, 1006, 0].includes(close.code), `close code ${close.code}`);
    // The error is in the session's log, so a resume delivers the query's one terminal frame.
    const again = await TestClient.connect(
      `${stack.wsUrl}?session_id=${connected.session_id}&last_seq=${client.frames.at(-1)!.seq}`,
    );
    const terminal = await again.terminal(id, 5000);
    assertEquals([terminal.code, terminal.retryable], ["slow_consumer", true]);
    await again.close();
  } finally {
    await proxy.close();
    await stack.close();
  }
});
