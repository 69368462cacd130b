/**
 * A planned stop drains: on SIGTERM the process takes no new query, lets the
 * answer in flight end whole, then says `shutdown` + 1012 and exits.
 */
import { assert, assertEquals } from "./assert.ts";
import { deadline, TEST_API_KEY, TestClient } from "./helpers.ts";
import { startServerProcess } from "./process.ts";
import { startSimulator } from "../dev/openrouter_simulator.ts";

Deno.test("SIGTERM mid-answer: the answer ends whole, then shutdown + 1012", async () => {
  const sim = startSimulator({ tokenDelayMs: 2 });
  const server = await startServerProcess({
    OPENROUTER_API_KEY: TEST_API_KEY,
    OPENROUTER_BASE_URL: sim.url,
    SESSION_STORE: "memory",
    DRAIN_GRACE_SECONDS: "10",
  });
  try {
    const tokens = Array.from({ length: 150 }, (_, i) => `w${i} `);
    sim.when("[long]", { kind: "stream", tokens, gapMs: 10 });
    const { client } = await TestClient.open(server.wsUrl);
    const id = client.query("[long] story");
    await client.waitFor((f) => f.id === id && f.delta !== undefined, "streaming");
    const stopping = server.kill("SIGTERM");
    // A query sent while it drains is refused, retryable; the answer goes on.
    await deadline(
      (async () => {
        while (!server.lines.some((l) => l.includes('"draining"'))) {
          await new Promise((r) => setTimeout(r, 10));
        }
      })(),
      5000,
      "the server to start draining",
    );
    client.send({ type: "query", id: "late", content: "one more" });
    const late = await client.waitFor((f) => f.id === "late", "late refused");
    assertEquals([late.code, late.retryable], ["draining", true]);
    const final = await client.terminal(id, 10_000);
    assertEquals([final.type, final.finish_reason], ["response", "stop"]);
    assertEquals(final.content, tokens.join(""));
    const bye = await client.waitFor((f) => f.event === "shutdown", "shutdown");
    assert(bye.seq > final.seq, "the goodbye comes after the answer");
    assertEquals((await deadline(client.closed, 5000, "close")).code, 1012);
    await stopping;
  } finally {
    await server.kill("SIGKILL");
    await sim.close();
  }
});
