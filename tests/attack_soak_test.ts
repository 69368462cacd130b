/**
 * The attacks of issue 11, mixed, for a while (ATTACK_SOAK_SECONDS, 8 s by
 * default, 60 for the full minute): reset handshakes, sessions churned from
 * one address, feedback and ping floods, frames with U+0000, oversized
 * frames, a reader that stalls. Afterwards a real user is served at once and
 * the server holds no more than it did before.
 */
import { assert, assertEquals } from "./assert.ts";
import { collectGarbage, eventually, startStack, TestClient } from "./helpers.ts";
import { startTcpProxy } from "./tcp_proxy.ts";

const SECONDS = Number(Deno.env.get("ATTACK_SOAK_SECONDS") ?? "8");
const HEAP_SLACK = 40 * 1024 * 1024;

/** Upgrades reset before their 101 is read (SO_LINGER 0), from a child process. */
function resets(port: number, n: number): Promise<Deno.CommandOutput> {
  const script = `
import socket, struct
for _ in range(${n}):
    try:
        s = socket.create_connection(("127.0.0.1", ${port}))
        s.send(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
               b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    except OSError:
        pass
`;
  return new Deno.Command("python3", { args: ["-c", script] }).output();
}

Deno.test("attack soak: mixed attacks leave no slot, session or memory behind", async () => {
  const stack = await startStack({
    LOG_LEVEL: "warn",
    MAX_CONNECTIONS: "200",
    MAX_SESSIONS_PER_USER: "30",
    RESUME_WINDOW_SECONDS: "1",
    SWEEP_INTERVAL_SECONDS: "0.2",
    HANDSHAKE_TIMEOUT_SECONDS: "0.5",
    SLOW_CONSUMER_SECONDS: "0.5",
    SEND_HIGH_WATER_BYTES: "16384",
    RATE_LIMIT_BURST: "20",
    RATE_LIMIT_PER_MINUTE: "600",
    MAX_ANSWER_CHARS: "100000000",
  }, { tokenDelayMs: 1 });
  const proxy = startTcpProxy(stack.server.port);
  try {
    // Warm up, then measure the baseline the soak must come back to.
    const warm = await TestClient.open(stack.wsUrl);
    await warm.client.terminal(warm.client.query("warm up"));
    await warm.client.close();
    await eventually(() => stack.server.app.sessions.size === 0, "warm-up session freed", 5000);
    collectGarbage();
    const baseline = Deno.memoryUsage().heapUsed;
    const rssBefore = Deno.memoryUsage().rss;

    stack.sim.when("[flood]", {
      kind: "stream",
      tokens: Array(50_000).fill("z".repeat(2048)),
      gapMs: 1,
    });
    const until = performance.now() + SECONDS * 1000;
    let rounds = 0;
    while (performance.now() < until) {
      rounds++;
      const resetting = resets(stack.server.port, 20);
      // Sessions churned from one address, each flooding feedback and pings with long ids.
      const churn = Array.from({ length: 10 }, async () => {
        const { client } = await TestClient.open(stack.wsUrl);
        const pad = "p".repeat(128);
        for (let i = 0; i < 50; i++) {
          client.send({ type: "ping", id: pad });
          client.send({
            type: "feedback",
            id: `nope-${i}`,
            rating: "down",
            comment: "x".repeat(4000),
          });
        }
        client.send(`{"type":"query","content":"a\\u0000b"}`);
        client.send({ type: "query", content: "x".repeat(70_000) });
        await client.next((f) => f.type === "error" && f.code === "message_too_large", "refused");
        await client.close();
      });
      // A reader that stops reading mid-answer.
      const stall = (async () => {
        const { client } = await TestClient.open(`ws://127.0.0.1:${proxy.port}`);
        client.query("[flood]");
        await client.waitFor((f) => f.delta !== undefined, "streaming");
        proxy.stopReading = true;
        // The server gives up on the reader and releases the model call.
        await eventually(() => stack.sim.openStreams === 0, "the stalled answer ended", 10_000);
        proxy.stopReading = false;
        // Its socket is the server's to close (1013); the checks below see that it did.
        client.ws.close();
      })();
      await Promise.all([...churn, stall, resetting]);
    }

    // Everything comes back: slots, sessions, model calls, memory.
    await eventually(
      () => stack.sim.openStreams === 0 && stack.server.app.sessions.size === 0,
      `sessions (${stack.server.app.sessions.size}) and model calls (${stack.sim.openStreams}) freed`,
      10_000,
    );
    let connections = -1;
    for (let i = 0; i < 200 && connections !== 0; i++) {
      connections = (await (await fetch(`${stack.server.url}/health`)).json()).connections;
      if (connections !== 0) await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(connections, 0, "every connection slot is back");
    const started = performance.now();
    const { client } = await TestClient.open(stack.wsUrl);
    const final = await client.terminal(client.query("still there?"));
    assertEquals(final.type, "response");
    assert(performance.now() - started < 2000, "a real user is served at once");
    await client.close();
    await eventually(() => stack.server.app.sessions.size === 0, "last session freed", 5000);
    collectGarbage();
    const { heapUsed: heap, rss } = Deno.memoryUsage();
    const mb = (n: number) => (n / 2 ** 20).toFixed(1);
    console.log(
      `attack soak: ${rounds} rounds in ${SECONDS} s, heap ${mb(baseline)} -> ${mb(heap)} MB, ` +
        `rss ${mb(rssBefore)} -> ${mb(rss)} MB (the test process, server included)`,
    );
    assert(heap < baseline + HEAP_SLACK, `heap grew from ${baseline} to ${heap}`);
  } finally {
    await proxy.close();
    await stack.close();
  }
});
