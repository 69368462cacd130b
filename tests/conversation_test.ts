/**
 * Conversations: several sockets on one named conversation, in one process
 * (memory store) and across processes (Postgres).
 */
import { assert, assertEquals } from "./assert.ts";
import { deadline, type Frame, isTerminal, startStack, TestClient } from "./helpers.ts";
import { DATABASE_URL, dbAvailable } from "./db.ts";
import { type ServerProcess, startServerProcess } from "./process.ts";
import { startSimulator } from "../dev/openrouter_simulator.ts";
import { TEST_API_KEY } from "./helpers.ts";

/** The conversation frames a socket got (seq > 0), in order. */
function seqd(c: TestClient): Frame[] {
  return c.frames.filter((f) => f.seq > 0);
}

/** Asserts a socket's frames run on without gap or repeat from its first. */
function assertRunsOn(frames: Frame[], what: string): void {
  for (let i = 1; i < frames.length; i++) {
    assertEquals(frames[i].seq, frames[i - 1].seq + 1, `${what}: seq after ${frames[i - 1].seq}`);
  }
}

/** Joins a conversation and waits for this socket's `connected`. */
async function join(url: string, name: string, extra = ""): Promise<[TestClient, Frame]> {
  const client = await TestClient.connect(`${url}?conversation=${name}${extra}`);
  const connected = await client.waitFor((f) => f.event === "connected", "connected", 8000);
  return [client, connected];
}

Deno.test("conversation: three sockets get the same frames with the same seq", async () => {
  const stack = await startStack();
  try {
    const [a, ca] = await join(stack.wsUrl, "trip");
    const [b, cb] = await join(stack.wsUrl, "trip");
    const [c, cc] = await join(stack.wsUrl, "trip");
    assertEquals(ca.session_id, cb.session_id);
    assertEquals(cb.session_id, cc.session_id);
    assertEquals([ca.conversation, ca.seq], ["trip", 1]);
    assert(ca.socket_id && ca.socket === ca.socket_id, "connected answers its own socket");
    assert(new Set([ca.socket_id, cb.socket_id, cc.socket_id]).size === 3, "socket ids differ");
    // Each socket's first frame is its own connected, then presence for everyone.
    assertEquals(seqd(c)[0].event, "connected");
    const p3 = await a.waitFor((f) => f.event === "presence" && f.sockets === 3, "presence 3");
    assertEquals(p3.joined, cc.socket_id);

    stack.sim.when("[q]", { kind: "stream", tokens: ["one ", "two ", "three"] });
    const id = b.query("[q]");
    const finals = await Promise.all([a, b, c].map((s) => s.terminal(id)));
    for (const f of finals) assertEquals([f.content, f.seq], ["one two three", finals[0].seq]);
    // From the third socket's connected on, all three saw exactly the same frames.
    const from = cc.seq;
    const view = (s: TestClient) =>
      JSON.stringify(seqd(s).filter((f) => f.seq >= from && f.seq <= finals[0].seq));
    assertEquals(view(a), view(b));
    assertEquals(view(b), view(c));
    for (const s of [a, b, c]) assertRunsOn(seqd(s), "socket");
    // Answers to one socket are marked; the others count them and move on.
    a.send({ type: "ping", id: "only-a" });
    const pong = await a.next((f) => f.type === "pong", "pong");
    assertEquals(pong.socket, ca.socket_id);
    await b.waitFor((f) => f.seq === pong.seq, "b sees the pong's seq");
    assertEquals(b.frames.find((f) => f.seq === pong.seq)!.socket, ca.socket_id);

    await c.close();
    const left = await a.waitFor((f) => f.left === cc.socket_id, "presence after leave");
    assertEquals([left.sockets, left.left], [2, cc.socket_id]);
    await a.close();
    await b.close();
  } finally {
    await stack.close();
  }
});

Deno.test("conversation: queries from different sockets are answered in order; any may cancel", async () => {
  const stack = await startStack();
  try {
    const [a] = await join(stack.wsUrl, "fifo");
    const [b] = await join(stack.wsUrl, "fifo");
    stack.sim.when("[slow]", {
      kind: "stream",
      tokens: Array.from({ length: 100 }, (_, i) => `t${i} `),
      gapMs: 10,
    });
    stack.sim.when("[fast]", { kind: "stream", tokens: ["quick"] });
    const first = a.query("[slow]");
    await b.waitFor((f) => f.id === first && f.type === "response", "first streams on b");
    const second = b.query("[fast]");
    const queued = await a.waitFor((f) => f.id === second && f.state === "queued", "queued on a");
    assertEquals(queued.position, 1);
    // The socket that did not ask cancels.
    b.send({ type: "command", name: "cancel", args: { id: first } });
    const cancelled = await a.terminal(first);
    assertEquals(cancelled.finish_reason, "cancelled");
    const fast = await a.terminal(second);
    assertEquals(fast.content, "quick");
    assert(cancelled.seq < fast.seq, "FIFO");
    for (const s of [a, b]) {
      for (const id of [first, second]) {
        assertEquals(s.frames.filter((f) => f.id === id && isTerminal(f)).length, 1);
      }
    }
    await a.close();
    await b.close();
  } finally {
    await stack.close();
  }
});

Deno.test("conversation: a socket drops and resumes while another keeps querying", async () => {
  const stack = await startStack();
  try {
    const [a] = await join(stack.wsUrl, "resume");
    const [b] = await join(stack.wsUrl, "resume");
    stack.sim.when("[one]", { kind: "stream", tokens: ["first ", "answer"] });
    const one = a.query("[one]");
    await b.terminal(one);
    const lastSeq = seqd(b).at(-1)!.seq;
    await b.close();
    // Meanwhile the conversation goes on without b.
    stack.sim.when("[two]", { kind: "stream", tokens: ["second ", "answer"] });
    const two = a.query("[two]");
    await a.terminal(two);
    const back = await TestClient.connect(`${stack.wsUrl}?conversation=resume&last_seq=${lastSeq}`);
    const resumed = await back.waitFor((f) => f.event === "resumed", "resumed");
    assertEquals([resumed.seq, resumed.conversation], [0, "resume"]);
    const replayedTwo = await back.terminal(two);
    assertEquals(replayedTwo.content, "second answer");
    // Every frame after last_seq once, then live frames; presence tells a.
    const got = seqd(back);
    assertEquals(got[0].seq, lastSeq + 1);
    assertRunsOn(got, "resumed socket");
    await a.waitFor((f) => f.event === "presence" && f.joined === resumed.socket_id, "rejoin");
    stack.sim.when("[three]", { kind: "stream", tokens: ["third"] });
    const three = back.query("[three]");
    assertEquals((await a.terminal(three)).content, "third");
    await back.terminal(three);
    assertRunsOn(seqd(back), "resumed socket, live");
    await a.close();
    await back.close();
  } finally {
    await stack.close();
  }
});

Deno.test("conversation: names are per user with auth; plain sessions still take over", async () => {
  const stack = await startStack();
  try {
    // Plain sessions keep v1's one-socket takeover.
    const { client: one, connected } = await TestClient.open(stack.wsUrl);
    const two = await TestClient.connect(
      `${stack.wsUrl}?session_id=${connected.session_id}&last_seq=1`,
    );
    await two.waitFor((f) => f.event === "resumed", "resumed");
    assertEquals((await one.closed).code, 4002);
    await two.close();
    // A bad name is refused with a clear error, not silently made a plain session.
    const bad = await TestClient.connect(`${stack.wsUrl}?conversation=${"x".repeat(129)}`);
    const err = await bad.waitFor((f) => f.type === "error", "bad name");
    assertEquals(err.code, "invalid_message");
    assertEquals((await bad.closed).code, 1008);
  } finally {
    await stack.close();
  }
});

// --- across processes ---------------------------------------------------------

function env(simUrl: string): Record<string, string> {
  return {
    OPENROUTER_API_KEY: TEST_API_KEY,
    OPENROUTER_BASE_URL: simUrl,
    SESSION_STORE: "postgres",
    DATABASE_URL,
    RESUME_WINDOW_SECONDS: "30",
    SWEEP_INTERVAL_SECONDS: "0.2",
    FRAME_FLUSH_MS: "10",
    RATE_LIMIT_BURST: "100",
  };
}

async function withTwo(
  fn: (
    sim: ReturnType<typeof startSimulator>,
    a: ServerProcess,
    b: ServerProcess,
  ) => Promise<void>,
): Promise<void> {
  const sim = startSimulator({ tokenDelayMs: 2 });
  const a = await startServerProcess(env(sim.url));
  const b = await startServerProcess(env(sim.url));
  try {
    await fn(sim, a, b);
  } finally {
    await a.kill("SIGTERM");
    await b.kill("SIGTERM");
    await sim.close();
  }
}

Deno.test({
  name: "conversation on two processes: every frame on both sockets, each query answered once, " +
    "a frame over 8000 bytes arrives",
  ignore: !dbAvailable,
  fn: () =>
    withTwo(async (sim, a, b) => {
      const name = `two-${crypto.randomUUID().slice(0, 8)}`;
      const [onA, ca] = await join(a.wsUrl, name);
      const [onB, cb] = await join(b.wsUrl, name);
      assertEquals(ca.session_id, cb.session_id);
      await onA.waitFor((f) => f.event === "presence" && f.sockets === 2, "presence 2 on A", 5000);
      const big = "x".repeat(20_000);
      sim.when("[big]", { kind: "stream", tokens: ["start ", big, " end"] });
      sim.when("[small]", { kind: "stream", tokens: ["small ", "one"] });
      const q1 = onB.query("[big]"); // asked on B, answered by the holder (A)
      const q2 = onA.query("[small]");
      const [f1a, f1b] = await Promise.all([onA.terminal(q1, 8000), onB.terminal(q1, 8000)]);
      assertEquals(f1a.content, `start ${big} end`);
      assertEquals(f1b, f1a);
      const [f2a, f2b] = await Promise.all([onA.terminal(q2, 8000), onB.terminal(q2, 8000)]);
      assertEquals(f2b, f2a);
      // Same frames, same seq, from B's connected on; each query ended once on each socket.
      const from = cb.seq;
      const view = (s: TestClient) =>
        JSON.stringify(seqd(s).filter((f) => f.seq >= from && f.seq <= f2a.seq));
      assertEquals(view(onB), view(onA));
      assertRunsOn(seqd(onA), "A");
      assertRunsOn(seqd(onB), "B");
      for (const s of [onA, onB]) {
        for (const id of [q1, q2]) {
          assertEquals(s.frames.filter((f) => f.id === id && isTerminal(f)).length, 1, id);
        }
      }
      assertEquals(sim.requests.length, 2, "each query went upstream once");
      await onA.close();
      await onB.close();
    }),
});

Deno.test({
  name: "conversation on two processes: the holder is killed; the other socket carries on",
  ignore: !dbAvailable,
  fn: () =>
    withTwo(async (sim, a, b) => {
      const name = `kill-${crypto.randomUUID().slice(0, 8)}`;
      const [onA] = await join(a.wsUrl, name); // A creates it: A holds it
      const [onB] = await join(b.wsUrl, name);
      sim.when("[long]", {
        kind: "stream",
        tokens: Array.from({ length: 300 }, (_, i) => `w${i} `),
        gapMs: 10,
      });
      const q = onB.query("[long]");
      await onB.waitFor((f) => f.id === q && f.delta === "w10 ", "streaming on B", 8000);
      await a.kill("SIGKILL");
      await onA.closed;
      // B notices its holder is gone, takes the conversation, ends the query once.
      const end = await onB.terminal(q, 15_000);
      assertEquals([end.type, end.code], ["error", "interrupted"]);
      sim.when("[after]", { kind: "stream", tokens: ["still ", "here"] });
      const after = onB.query("[after]");
      assertEquals((await onB.terminal(after, 8000)).content, "still here");
      assertRunsOn(seqd(onB), "B");
      assertEquals(onB.frames.filter((f) => f.id === q && isTerminal(f)).length, 1);
      await onB.close();
    }),
});

Deno.test({
  name: "postgres: a reconnect to the other live process mid-answer gets the whole answer, " +
    "each delta once, no interrupted",
  ignore: !dbAvailable,
  fn: () =>
    withTwo(async (sim, a, b) => {
      const { client, connected } = await TestClient.open(a.wsUrl);
      sim.when("[long]", {
        kind: "stream",
        tokens: Array.from({ length: 150 }, (_, i) => `w${i} `),
        gapMs: 10,
      });
      const q = client.query("[long]");
      await client.waitFor((f) => f.id === q && f.delta === "w20 ", "streaming", 5000);
      client.ws.close();
      await client.closed;
      const lastSeq = seqd(client).at(-1)!.seq;
      const again = await TestClient.connect(
        `${b.wsUrl}?session_id=${connected.session_id}&last_seq=${lastSeq}`,
      );
      await again.waitFor((f) => f.event === "resumed", "resumed on B", 8000);
      const end = await again.terminal(q, 15_000);
      assertEquals(end.type, "response");
      const all = [...seqd(client), ...seqd(again)];
      all.forEach((f, i) => assertEquals(f.seq, i + 1, `seq at ${i}`));
      const deltas = all.filter((f) => f.id === q && f.delta !== undefined).map((f) => f.delta);
      assertEquals(deltas.join(""), end.content);
      assertEquals(all.filter((f) => f.id === q && isTerminal(f)).length, 1);
      // Idle now: the session moves to where its socket is; the next answer comes from B.
      await deadline(
        (async () => {
          while (!b.lines.some((l) => l.includes('"session_adopted"'))) {
            await new Promise((r) => setTimeout(r, 20));
          }
        })(),
        8000,
        "B to adopt the idle session",
      );
      sim.when("[next]", { kind: "stream", tokens: ["from ", "B"] });
      const next = again.query("[next]");
      assertEquals((await again.terminal(next, 8000)).content, "from B");
      assertRunsOn(seqd(again), "B");
      await again.close();
    }),
});
