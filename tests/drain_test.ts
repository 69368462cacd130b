/**
 * A planned stop drains: on SIGTERM the process takes no new query, lets the
 * answer in flight end whole, then says `shutdown` + 1012 and exits — and
 * tells the other processes which sessions it let go before it closes its
 * store.
 */
import { assert, assertEquals } from "./assert.ts";
import { deadline, eventually, startStack, TEST_API_KEY, TestClient } from "./helpers.ts";
import { startServerProcess } from "./process.ts";
import { dbAvailable } from "./db.ts";
import { proxyFor, tempDatabase, viaProxy } from "./store_fixtures.ts";
import { startSimulator } from "../dev/openrouter_simulator.ts";
import { type BusMessage, createPgBus } from "../supabase/functions/_shared/store/bus.ts";
import postgres from "postgres";

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

Deno.test({
  name: "a stopping process announces every conversation it lets go before it closes its store, " +
    "also over a slow database (the other processes need not wait out its silence)",
  ignore: !dbAvailable,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const db = await tempDatabase(true);
    const proxy = proxyFor(db.url);
    const stack = await startStack({
      SESSION_STORE: "postgres",
      DATABASE_URL: viaProxy(db.url, proxy),
      RESUME_WINDOW_SECONDS: "30",
    });
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    const heard: BusMessage[] = [];
    let stopped = false;
    try {
      await createPgBus(sql).subscribe((msg) => heard.push(msg));
      const client = await TestClient.connect(`${stack.wsUrl}?conversation=notes`);
      const hello = await client.waitFor((f) => f.event === "connected", "connected");
      const t = await client.terminal(client.query("remember this"), 5000);
      assertEquals(t.type, "response");
      // From here each round trip to Postgres takes 1.2 s: the release (a write, then a NOTIFY)
      // is still under way while the process stops, and must not be cut off.
      proxy.delayMs = 600;
      await stack.close();
      stopped = true;
      // Its NOTIFY is delivered here as it commits: before the stopping process hears back.
      await eventually(
        () => heard.some((m) => m.kind === "released" && m.session === hello.session_id),
        `released announced (heard: ${heard.map((m) => m.kind)})`,
        1000,
      );
      const [row] = await sql`
        select instance from agent_websocket.sessions where id = ${hello.session_id}`;
      assertEquals(row.instance, null, "the store says nobody holds it");
    } finally {
      if (!stopped) await stack.close();
      await sql.end();
      await proxy.close();
      await db.drop();
    }
  },
});
