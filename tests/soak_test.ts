/**
 * Soak test: many connect/disconnect cycles and many concurrent streaming
 * sessions, then a check that nothing is left behind — no session, no
 * upstream stream, no store entry, no live server-side socket or session
 * object, and heap back near where it started. Deno has had WebSocket leaks
 * (denoland/deno#25070, #27925, #27156); this is the guard against them.
 *
 * Short by default (about 1000 cycles, 50 at a time; 200 concurrent streaming
 * sessions), so that it runs in CI in seconds. For a real soak:
 *
 *   SOAK=long deno test -A tests/soak_test.ts
 *
 * runs 20000 cycles (100 at a time) and five rounds of 1000 concurrent
 * streaming sessions; it takes about a minute. `SOAK_CYCLES=<n>`,
 * `SOAK_SESSIONS=<n>` and `SOAK_ROUNDS=<n>` override those numbers.
 *
 * Two things outside the server are allowed for. Deno keeps a server socket
 * whose peer vanished without a close frame reachable until its heartbeat
 * (`idleTimeout`) runs out, so the cycles test runs with a short heartbeat and the
 * check waits a few of them. The OpenRouter stand-in keeps an abort listener
 * and a timer per streamed token until it is closed, so it is closed before
 * the heap is measured.
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import {
  assertGapless,
  collectGarbage,
  eventually,
  type Frame,
  isTerminal,
  type Stack,
  startStack,
  TestClient,
} from "./helpers.ts";
import { defaultReply } from "../dev/openrouter_simulator.ts";
import { MemoryStore, type StoredFrame } from "../supabase/functions/_shared/store/store.ts";
import type { ChatMessage } from "../supabase/functions/_shared/model/model.ts";
import { startTcpProxy } from "./tcp_proxy.ts";

const LONG = Deno.env.get("SOAK") === "long";
const CYCLES = Number(Deno.env.get("SOAK_CYCLES") ?? (LONG ? 20_000 : 1_000));
const CYCLE_CONCURRENCY = LONG ? 100 : 50;
const SESSIONS = Number(Deno.env.get("SOAK_SESSIONS") ?? (LONG ? 1_000 : 200));
const ROUNDS = Number(Deno.env.get("SOAK_ROUNDS") ?? (LONG ? 5 : 1));
const HEAP_SLACK = 40 * 1024 * 1024;
/**
 * The server's protocol-ping interval (`idleTimeout`) in the cycles test:
 * Deno keeps a server socket that lost its peer without a close frame (and
 * so its session) reachable until that timer runs out, so it is short there.
 */
const HEARTBEAT_S = 2;
/** Questions with this marker get an answer that outlasts any run unless it is aborted. */
const ENDLESS = "[endless]";

/**
 * A MemoryStore that also knows which sessions hold data in it, so the test
 * sees an entry that outlives its session (for example one re-created by a
 * late write after `delete`).
 */
class TrackingStore extends MemoryStore {
  readonly live = new Set<string>();
  constructor() {
    super({
      maxHistory: 50,
      maxHistoryChars: 200_000,
      replayMaxFrames: 5_000,
      replayMaxBytes: 1_048_576,
    });
  }
  override appendFrame(id: string, frame: StoredFrame): void {
    this.live.add(id);
    super.appendFrame(id, frame);
  }
  override appendHistory(id: string, messages: ChatMessage[]): Promise<void> {
    this.live.add(id);
    return super.appendHistory(id, messages);
  }
  override delete(id: string): Promise<void> {
    this.live.delete(id);
    return super.delete(id);
  }
}

const mb = (n: number) => `${(n / 1048576).toFixed(1)} MB`;

/**
 * The stack both tests run on. `env` adds to it; warn-level logs, so that
 * the test's own log buffer does not weigh on the heap it measures.
 */
async function soakStack(store: TrackingStore, env: Record<string, string> = {}): Promise<Stack> {
  const stack = await startStack(
    {
      ...env,
      RESUME_WINDOW_SECONDS: "0",
      LOG_LEVEL: "warn",
      MAX_CONNECTIONS: "100000",
      // Every socket comes from 127.0.0.1: the per-address session bound must not count here.
      MAX_SESSIONS_PER_USER: "100000",
      // Only a client going away may end an endless answer, never a timeout.
      UPSTREAM_FIRST_TOKEN_TIMEOUT_SECONDS: "600",
      UPSTREAM_TOTAL_TIMEOUT_SECONDS: "600",
    },
    { tokenDelayMs: 2 },
    { store },
  );
  stack.sim.when(ENDLESS, { kind: "stream", tokens: Array(1_000_000).fill("w "), gapMs: 5 });
  return stack;
}

/**
 * Runs `fn(0..total-1)` with at most `concurrency` calls at a time. After a
 * failure no new call starts; the ones running finish, then it rethrows.
 */
async function pool(
  total: number,
  concurrency: number,
  fn: (i: number) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  const failures: unknown[] = [];
  await Promise.all(
    Array.from({ length: Math.min(concurrency, total) }, async () => {
      while (next < total && failures.length === 0) {
        try {
          await fn(next++);
        } catch (err) {
          failures.push(err);
        }
      }
    }),
  );
  if (failures.length > 0) throw failures[0];
}

/** Server-side objects of a session, held weakly to see whether they are freed. */
function watch(stack: Stack, sessionId: string, refs: WeakRef<object>[]): void {
  const session = stack.server.app.sessions.get(sessionId);
  assert(session, `session ${sessionId} is registered while its socket is open`);
  refs.push(new WeakRef(session));
  if (session.socket) refs.push(new WeakRef(session.socket));
}

/**
 * After every client has gone: no session, no upstream stream, no store
 * entry, no live server-side object, heap near the baseline, health says 0.
 */
async function assertNothingLeft(
  stack: Stack,
  store: TrackingStore,
  refs: WeakRef<object>[],
  baseline: number,
): Promise<void> {
  await eventually(
    () => stack.server.app.sessions.size === 0,
    `sessions to be freed (${stack.server.app.sessions.size} left)`,
    5000,
  );
  await eventually(
    () => stack.sim.openStreams === 0,
    `upstream streams to be aborted (${stack.sim.openStreams} open)`,
    5000,
  );
  assertEquals([...store.live], [], "store entries left behind");
  assertEquals(stack.server.app.sessions.inFlight, 0);
  const crashes = stack.logs.filter((l) => JSON.parse(l).level === "error");
  assertEquals(crashes, [], "error-level server log lines");

  // Only the server is measured: the stand-in holds garbage until it closes (see
  // the top), and what the test itself recorded goes too.
  await stack.sim.close();
  stack.sim.requests.length = 0;
  stack.logs.length = 0;
  // Every server-side session and socket becomes garbage: at once for clean
  // closes, within a few heartbeats for network drops.
  let gc = collectGarbage();
  if (gc) {
    const end = performance.now() + HEARTBEAT_S * 3000 + 2000;
    let alive = refs.filter((r) => r.deref() !== undefined).length;
    while (alive > 0 && performance.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
      gc = collectGarbage();
      alive = refs.filter((r) => r.deref() !== undefined).length;
    }
    assertEquals(alive, 0, `server-side sessions/sockets still reachable, of ${refs.length}`);
  }
  const heap = Deno.memoryUsage();
  console.log(
    `heapUsed ${mb(baseline)} -> ${mb(heap.heapUsed)}, rss ${mb(heap.rss)}${
      gc ? " (after forced GC)" : " (no forced GC available)"
    }`,
  );
  assert(
    heap.heapUsed < baseline + HEAP_SLACK,
    `heapUsed grew from ${mb(baseline)} to ${mb(heap.heapUsed)}`,
  );

  const res = await fetch(`${stack.server.url}/health`);
  assertEquals(res.status, 200);
  const health = await res.json();
  assertEquals([health.status, health.sessions, health.in_flight], ["ok", 0, 0]);
}

/** How one cycle behaves; cycles rotate through these. */
const CYCLE_KINDS = [
  "connect, close",
  "connect, close",
  "query, full answer, close",
  "query, full answer, close",
  "close mid-stream",
  "close mid-stream with 3000",
  "query, close at once",
  "close before the connected frame is read",
  "ping, pong, close with 4000",
  "network drop mid-stream",
  "cancel mid-stream, then close",
] as const;

/** One connect/disconnect cycle; returns what it did. */
async function cycle(
  stack: Stack,
  i: number,
  refs: WeakRef<object>[],
  open: Set<TestClient>,
  problems: string[],
): Promise<string> {
  const kind = CYCLE_KINDS[i % CYCLE_KINDS.length];
  if (kind === "network drop mid-stream") {
    // A private proxy, so cutting it drops this connection only.
    const proxy = startTcpProxy(stack.server.port);
    try {
      const { client, connected } = await TestClient.open(`ws://127.0.0.1:${proxy.port}`);
      open.add(client);
      watch(stack, connected.session_id, refs);
      const id = client.query(`${ENDLESS} cycle ${i}`);
      await client.waitFor((f) => f.id === id && f.delta !== undefined, "a delta", 5000);
      proxy.cutAll();
      await client.closed;
      open.delete(client);
    } finally {
      await proxy.close();
    }
    return kind;
  }
  const client = await TestClient.connect(stack.wsUrl);
  open.add(client);
  try {
    if (kind === "close before the connected frame is read") {
      await client.close();
      return kind;
    }
    const connected = await client.waitFor((f) => f.event === "connected", "connected", 5000);
    watch(stack, connected.session_id, refs);
    switch (kind) {
      case "connect, close":
        break;
      case "query, full answer, close": {
        const question = `cycle ${i}`;
        const id = client.query(question);
        const final = await client.terminal(id, 5000);
        assertEquals(final.type, "response", `cycle ${i}: ${JSON.stringify(final)}`);
        assertEquals(final.content, defaultReply(question).join(""));
        break;
      }
      case "close mid-stream":
      case "close mid-stream with 3000": {
        const id = client.query(`${ENDLESS} cycle ${i}`);
        await client.waitFor((f) => f.id === id && f.delta !== undefined, "a delta", 5000);
        await client.close(kind === "close mid-stream" ? 1000 : 3000);
        break;
      }
      case "query, close at once":
        client.query(`${ENDLESS} cycle ${i}`);
        break;
      case "cancel mid-stream, then close": {
        const id = client.query(`${ENDLESS} cycle ${i}`);
        await client.waitFor((f) => f.id === id && f.delta !== undefined, "a delta", 5000);
        client.send({ type: "command", name: "cancel", id: `c${i}` });
        // Collected rather than thrown, so the report says how many of them went wrong.
        const final = await client.terminal(id, 3000).catch(() => null);
        if (final?.finish_reason !== "cancelled") {
          problems.push(
            `cycle ${i}: cancel mid-stream ended with ${
              final ? JSON.stringify(final).slice(0, 200) : "no terminal frame within 3 s"
            }`,
          );
        }
        break;
      }
      case "ping, pong, close with 4000":
        client.send({ type: "ping", id: `p${i}` });
        await client.waitFor((f) => f.type === "pong" && f.id === `p${i}`, "pong", 5000);
        await client.close(4000);
        break;
    }
    await client.close();
    return kind;
  } finally {
    open.delete(client);
  }
}

Deno.test("soak: connect/disconnect cycles leave no session, stream, socket or memory behind", async () => {
  const store = new TrackingStore();
  const stack = await soakStack(store, { HEARTBEAT_SECONDS: String(HEARTBEAT_S) });
  const open = new Set<TestClient>();
  try {
    const refs: WeakRef<object>[] = [];
    // Warm up with one cycle of each kind, then take the baseline.
    await pool(CYCLE_KINDS.length, CYCLE_KINDS.length, (i) => cycle(stack, i, [], open, []));
    await eventually(() => stack.server.app.sessions.size === 0, "warm-up sessions freed");
    await eventually(() => stack.sim.openStreams === 0, "warm-up streams aborted");
    collectGarbage();
    const baseline = Deno.memoryUsage().heapUsed;

    const started = performance.now();
    const done = new Map<string, number>();
    const problems: string[] = [];
    await pool(CYCLES, CYCLE_CONCURRENCY, async (i) => {
      const kind = await cycle(stack, i, refs, open, problems);
      done.set(kind, (done.get(kind) ?? 0) + 1);
    });
    const total = [...done.values()].reduce((a, b) => a + b, 0);
    assertEquals(total, CYCLES, "cycles completed");
    console.log(
      `${CYCLES} cycles (${CYCLE_CONCURRENCY} at a time) in ${
        Math.round(performance.now() - started)
      } ms; ${stack.sim.requests.length} upstream requests`,
    );
    const cancels = done.get("cancel mid-stream, then close") ?? 0;
    assert(
      problems.length === 0,
      `${problems.length} of ${cancels} mid-stream cancels did not end with exactly one ` +
        `cancelled response:\n${problems.slice(0, 5).join("\n")}`,
    );
    await assertNothingLeft(stack, store, refs, baseline);
  } finally {
    await Promise.all([...open].map((c) => c.close()));
    await stack.close();
  }
});

Deno.test("soak: hundreds of concurrent streaming sessions each get their whole answer exactly once", async () => {
  const store = new TrackingStore();
  const stack = await soakStack(store);
  const open = new Set<TestClient>();
  try {
    const refs: WeakRef<object>[] = [];
    // Warm up, then take the baseline.
    {
      const { client } = await TestClient.open(stack.wsUrl);
      open.add(client);
      await client.terminal(client.query("warm up"));
      await client.close();
      open.delete(client);
      await eventually(() => stack.server.app.sessions.size === 0, "warm-up session freed");
    }
    collectGarbage();
    const baseline = Deno.memoryUsage().heapUsed;

    for (let round = 0; round < ROUNDS; round++) {
      const started = performance.now();
      const clients: TestClient[] = [];
      await pool(SESSIONS, 50, async () => {
        const { client, connected } = await TestClient.open(stack.wsUrl);
        open.add(client);
        clients.push(client);
        watch(stack, connected.session_id, refs);
      });
      // Every session asks at once; watch how many answers stream side by side.
      let peak = 0;
      const sampler = setInterval(() => peak = Math.max(peak, stack.sim.openStreams), 1);
      let finals: Frame[];
      try {
        const asked = clients.map((client, i) => {
          const question = `round ${round} session ${i}: tell me about soak tests`;
          return { client, question, id: client.query(question) };
        });
        finals = await Promise.all(
          asked.map(({ client, id }) =>
            client.terminal(id, 15_000).catch((err) => {
              const closed = client.closeEvent;
              throw new Error(
                `${err.message}; the socket is ${closed ? `closed with ${closed.code}` : "open"}`,
              );
            })
          ),
        );
        asked.forEach(({ client, question, id }, i) => {
          const expected = defaultReply(question).join("");
          assertEquals(finals[i].type, "response", `session ${i}: ${JSON.stringify(finals[i])}`);
          assertEquals(finals[i].content, expected, `session ${i}: whole answer`);
          const frames = client.framesOf(id);
          const deltas = frames.filter((f) => f.delta !== undefined).map((f) => f.delta);
          assertEquals(deltas.join(""), expected, `session ${i}: every token exactly once`);
          assertEquals(frames.filter(isTerminal).length, 1, `session ${i}: one terminal`);
          assertEquals(frames.filter((f) => f.state === "thinking").length, 1);
          assertEquals(client.frames.filter((f) => f.type === "error").length, 0);
          assertGapless(client.frames);
        });
      } finally {
        clearInterval(sampler);
      }
      assert(
        peak >= SESSIONS / 4,
        `answers streamed side by side: at most ${peak} upstream streams were open at once`,
      );
      await Promise.all(clients.map(async (c) => {
        await c.close();
        open.delete(c);
      }));
      console.log(
        `round ${round}: ${SESSIONS} sessions answered in ${
          Math.round(performance.now() - started)
        } ms; up to ${peak} streams at once`,
      );
    }
    await assertNothingLeft(stack, store, refs, baseline);
  } finally {
    await Promise.all([...open].map((c) => c.close()));
    await stack.close();
  }
});
