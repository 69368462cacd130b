/**
 * Exactly once across processes, one fault at a time: each test forces one
 * kind of event the chaos run mixes (a crash right after `thinking`, after the
 * first delta, right after a terminal; a partition from Postgres; database
 * cuts; a planned stop; a reconnect to the other live process) and checks
 * every frame of every socket with the chaos checker: one terminal per query,
 * seq gapless with no repeats, deltas adding up, and `interrupted` only after
 * a crash. A failure names the invariant and shows the frames.
 */
import { assert, assertEquals } from "./assert.ts";
import { dbAvailable } from "./db.ts";
import { deadline } from "./helpers.ts";
import {
  assertInvariants,
  type ChaosClient,
  Cluster,
  formatReport,
  type Frame,
  type Invariant,
  isTerminal,
  type Node,
} from "./chaos.ts";

const opts = { ignore: !dbAvailable, sanitizeOps: false, sanitizeResources: false };

async function withCluster(
  fn: (cluster: Cluster) => Promise<void>,
  answer = { tokens: 40, gapMs: 20 },
  ignore: Invariant[] = [],
  env: Record<string, string> = {},
): Promise<void> {
  const cluster = await Cluster.start({ processes: 2, answer, env });
  let error: unknown;
  try {
    await fn(cluster);
  } catch (err) {
    error = err;
  } finally {
    await cluster.close();
  }
  const report = cluster.checker.finish();
  cluster.annotate();
  console.log(formatReport(report));
  try {
    assertInvariants(report, { ignore });
  } catch (broken) {
    // Both: what the test saw, and which invariants broke with their frames.
    if (error) throw new Error(`${error}\n\n${(broken as Error).message}`);
    throw broken;
  }
  if (error) throw error;
}

/** The live process other than `node`. */
function other(cluster: Cluster, node: Node): Node {
  const n = cluster.live().find((x) => x !== node);
  if (!n) throw new Error("no other live process");
  return n;
}

/** Asks one short question and waits for its answer: the session is usable. */
async function stillWorks(c: ChaosClient): Promise<void> {
  const id = c.query("short");
  assertEquals(await c.settle(id, 10_000), "terminal", `${c.name}: a question after the fault`);
}

const points: [string, (id: string) => (f: Frame) => boolean][] = [
  ["`thinking`", (id) => (f) => f.id === id && f.state === "thinking"],
  ["the first delta", (id) => (f) => f.id === id && typeof f.delta === "string"],
  ["a terminal", (id) => (f) => f.id === id && isTerminal(f)],
];

for (const [point, seen] of points) {
  Deno.test({
    name: `kill -9 right after ${point}, resume on the other process: one terminal per ` +
      "query (×5)",
    ...opts,
    fn: () =>
      withCluster(async (cluster) => {
        for (let round = 1; round <= 5; round++) {
          const a = cluster.live()[0];
          const b = other(cluster, a);
          const c = cluster.client(`r${round}`);
          await c.open(a);
          await stillWorks(c); // a finished query before: history, and a durable session
          const id = c.query("long");
          await c.next(seen(id), `${point} of ${id}`);
          await cluster.stop(a, "SIGKILL");
          await c.closed;
          await c.resume(b);
          await c.settle(id, 5000);
          await stillWorks(c);
          await c.close();
        }
      }),
  });
}

/**
 * Four clients stream from A; A is cut off from Postgres for `ms`; they resume
 * on B at once; when A is back they ask again, and then go back to A.
 */
async function partitionThenResume(cluster: Cluster, ms: number): Promise<void> {
  const [a, b] = cluster.live();
  const clients = [1, 2, 3, 4].map((i) => cluster.client(`c${i}`));
  await Promise.all(clients.map((c) => c.open(a)));
  await Promise.all(clients.map(stillWorks));
  const ids = clients.map((c) => c.query("long"));
  await Promise.all(
    clients.map((c, i) => c.next((f) => f.id === ids[i] && f.delta === "w3 ", "streaming on a")),
  );
  const healed = cluster.partition(a, ms);
  await Promise.all(clients.map((c) => c.resume(b)));
  await Promise.all(clients.map((c, i) => c.settle(ids[i], 20_000)));
  await healed;
  await Promise.all(clients.map(stillWorks));
  // A, back, must not answer from what it held before it was cut off.
  await Promise.all(clients.map((c) => c.resume(a)));
  await Promise.all(clients.map(stillWorks));
}

Deno.test({
  name: "a process cut off from Postgres for 4 s while it serves; its clients resume on the " +
    "other, then come back: no doubled, no hanging, no resume refused",
  ...opts,
  // Past the holder timeout the other process must take the session over; whether the
  // answer cut off there may end `interrupted` is judged by the next test, not this one.
  fn: () =>
    withCluster((cluster) => partitionThenResume(cluster, 4000), undefined, ["d:interrupted"]),
});

Deno.test({
  name: "a process cut off from Postgres for 0.5 s while its clients resume on the other: " +
    "nothing interrupted (a database cut is not a crash)",
  ...opts,
  fn: () => withCluster((cluster) => partitionThenResume(cluster, 500)),
});

Deno.test({
  name: "a fresh session resumed on the other process right after `connected`: resumed, " +
    "not not_found (×10)",
  ...opts,
  fn: () =>
    withCluster(async (cluster) => {
      const [a, b] = cluster.live();
      for (let round = 1; round <= 10; round++) {
        const c = cluster.client(`r${round}`);
        await c.open(round % 2 ? a : b);
        await c.resume(round % 2 ? b : a);
        await stillWorks(c);
        await c.close();
      }
    }),
});

Deno.test({
  name: "random database connection cuts during 100 streaming queries: all answered whole, " +
    "no process crashes, no socket dropped",
  ...opts,
  fn: () =>
    withCluster(async (cluster) => {
      const nodes = cluster.live();
      const clients = Array.from({ length: 10 }, (_, i) => cluster.client(`c${i + 1}`));
      await Promise.all(clients.map((c, i) => c.open(nodes[i % 2])));
      let running = true;
      let cuts = 0;
      const cutting = (async () => {
        while (running) {
          await new Promise((r) => setTimeout(r, 50 + Math.random() * 200));
          const live = cluster.live();
          if (running && live.length) {
            cluster.cutDb(live[Math.floor(Math.random() * live.length)]);
            cuts++;
          }
        }
      })();
      const outcomes: string[] = [];
      await Promise.all(clients.map(async (c) => {
        for (let i = 0; i < 10; i++) {
          if (!c.live) break;
          outcomes.push(await c.settle(c.query("long"), 15_000));
        }
      }));
      running = false;
      await cutting;
      console.log(`  ${cuts} cuts; outcomes: ${JSON.stringify(count(outcomes))}`);
      const report = cluster.checker.finish();
      assertEquals(report.total.queries, 100, "every client asked its 10 questions");
      assertEquals(report.total.answered, 100, formatReport(report));
      assertEquals(
        clients.flatMap((c) => c.serverCloses.map((code) => `${c.name}:${code}`)),
        [],
        "no socket was dropped",
      );
      assertEquals(cluster.countLogs().uncaught ?? 0, 0, "no uncaught error in any process");
    }, { tokens: 40, gapMs: 15 }),
});

Deno.test({
  name: "SIGTERM mid-answer; one reconnect lands on the stopping process, one on the other: " +
    "no not_found, nothing interrupted, every answer whole",
  ...opts,
  fn: () =>
    withCluster(async (cluster) => {
      const [a, b] = cluster.live();
      const c1 = cluster.client("on-stopping");
      const c2 = cluster.client("on-other");
      for (const c of [c1, c2]) {
        await c.open(a);
        await stillWorks(c);
      }
      const ids = [c1.query("long"), c2.query("long")];
      // Both waits start before either answer can get there.
      await Promise.all([
        c1.next((f) => f.id === ids[0] && f.delta === "w3 ", "streaming"),
        c2.next((f) => f.id === ids[1] && f.delta === "w3 ", "streaming"),
      ]);
      await cluster.stop(a, "SIGTERM");
      // From here both follow the server's goodbyes (shutdown, 1012) as the SDK does.
      c1.auto = c2.auto = true;
      await Promise.all([c1.resume(a, { fallback: true }), c2.resume(b)]);
      console.log(`  resumes: ${c1.name} ${c1.resumes.join(",")}; ${c2.name} ${c2.resumes}`);
      const ends = await Promise.all([c1.settle(ids[0], 15_000), c2.settle(ids[1], 15_000)]);
      assertEquals(ends, ["terminal", "terminal"]);
      await c1.ready();
      await c2.ready();
      await Promise.all([stillWorks(c1), stillWorks(c2)]);
      assert(
        !c1.resumes.includes("refused") && !c2.resumes.includes("refused"),
        `no resume refused: ${c1.resumes} / ${c2.resumes}`,
      );
    }, { tokens: 60, gapMs: 20 }),
});

/**
 * Five rounds: a long query and a short one queued behind it on the holder; the holder
 * gets SIGTERM once `ready` saw its frame; the client resumes on the other at once.
 */
function sigtermWithQueued(ready: (f: Frame, id: string) => boolean, what: string) {
  return withCluster(async (cluster) => {
    for (let round = 1; round <= 5; round++) {
      const a = cluster.live()[0];
      const b = other(cluster, a);
      const c = cluster.client(`r${round}`);
      c.auto = true;
      await c.open(a);
      await stillWorks(c);
      const ids = [c.query("long"), c.query("short")];
      await c.next((f) => ready(f, ids[0]), what);
      await cluster.stop(a, "SIGTERM");
      await c.resume(b);
      for (const id of ids) assertEquals(await c.settle(id, 10_000), "terminal", id);
      await stillWorks(c);
      await c.close();
    }
  });
}

Deno.test({
  name: "SIGTERM of the holder with a query queued behind the answer; the client resumes on " +
    "the other at once: `resumed` first, every frame once, nothing interrupted (×5)",
  ...opts,
  fn: () => sigtermWithQueued((f, id) => f.id === id && f.delta === "w3 ", "streaming"),
});

Deno.test({
  name: "SIGTERM of the holder right as a query is sent; the client resumes on the other at " +
    "once: `resumed` first, every frame once, nothing interrupted (×5)",
  ...opts,
  fn: () => sigtermWithQueued((f, id) => f.id === id, "the query accepted"),
});

Deno.test({
  name: "SIGTERM of the holder at an answer's last delta; the client follows the goodbye to " +
    "the other: `resumed` first, every frame once (×5)",
  ...opts,
  fn: () =>
    withCluster(async (cluster) => {
      for (let round = 1; round <= 5; round++) {
        const a = cluster.live()[0];
        const b = other(cluster, a);
        const c = cluster.client(`r${round}`);
        await c.open(a);
        await stillWorks(c);
        const id = c.query("long");
        await c.next((f) => f.id === id && f.delta === "w39 ", "the last delta");
        await cluster.stop(a, "SIGTERM");
        await c.closed;
        await c.resume(b);
        assertEquals(await c.settle(id, 10_000), "terminal", id);
        await stillWorks(c);
        await c.close();
      }
    }),
});

Deno.test({
  name: "SIGTERM of a process holding 8 streaming sessions; each client follows the goodbye " +
    "to a random process: `resumed` first, every frame once, nothing interrupted (×3)",
  ...opts,
  fn: () =>
    withCluster(async (cluster) => {
      for (let round = 1; round <= 3; round++) {
        const a = cluster.live()[0];
        const clients = Array.from({ length: 8 }, (_, i) => cluster.client(`r${round}c${i + 1}`));
        await Promise.all(clients.map((c) => c.open(a)));
        await Promise.all(clients.map(stillWorks));
        for (const c of clients) c.auto = true;
        const ids = clients.map((c) => c.query("long"));
        await Promise.all(
          clients.map((c, i) => c.next((f) => f.id === ids[i] && f.delta === "w30 ", "streaming")),
        );
        await cluster.stop(a, "SIGTERM");
        const ends = await Promise.all(clients.map((c, i) => c.settle(ids[i], 10_000)));
        assertEquals(ends, ids.map(() => "terminal"));
        await Promise.all(clients.map(async (c) => {
          await c.ready();
          await stillWorks(c);
          await c.close();
        }));
      }
    }),
});

Deno.test({
  name: "control: a reconnect to the same process mid-answer resumes it whole (×5)",
  ...opts,
  fn: () =>
    withCluster(async (cluster) => {
      const [a] = cluster.live();
      for (let round = 1; round <= 5; round++) {
        const c = cluster.client(`r${round}`);
        await c.open(a);
        const id = c.query("long");
        await c.next((f) => f.id === id && f.delta === "w5 ", "streaming");
        await c.resume(a);
        assertEquals(await c.settle(id, 10_000), "terminal", `the answer to ${id} ended`);
        await stillWorks(c);
        await c.close();
      }
    }),
});

for (const overlap of [false, true]) {
  Deno.test({
    name: "a reconnect to the other live process mid-answer " +
      `(${overlap ? "old socket still open" : "old socket closed first"}): the answer completes ` +
      "there, deltas exactly once, nothing interrupted (×5)",
    ...opts,
    fn: () =>
      withCluster(async (cluster) => {
        const [a, b] = cluster.live();
        for (let round = 1; round <= 5; round++) {
          const c = cluster.client(`r${round}`);
          const [from, to] = round % 2 ? [a, b] : [b, a];
          await c.open(from);
          await stillWorks(c);
          const id = c.query("long");
          await c.next((f) => f.id === id && f.delta === "w5 ", "streaming");
          await c.resume(to, { overlap });
          assertEquals(await c.settle(id, 10_000), "terminal", `the answer to ${id} ended`);
          await stillWorks(c);
          await c.close();
        }
      }),
  });
}

/** A client that asked a long question on one process and resumed on the other mid-answer. */
async function relayedMidAnswer(cluster: Cluster) {
  const [a, b] = cluster.live();
  const c = cluster.client("relayed");
  await c.open(a);
  await stillWorks(c);
  const id = c.query("long");
  await c.next((f) => f.id === id && f.delta === "w3 ", "streaming on a");
  // Mid-answer the session stays on `a`: `b` relays this socket to it.
  await c.resume(b);
  return { a, c, id };
}

Deno.test({
  name: "a question sent through the other process while the holder is cut off from Postgres " +
    "is answered once the session is taken over there, exactly once",
  ...opts,
  // The answer the cut-off holder was streaming ends `interrupted`: it looks crashed.
  fn: () =>
    withCluster(
      async (cluster) => {
        const { a, c, id: long } = await relayedMidAnswer(cluster);
        const healed = cluster.partition(a, 12_000);
        // Sent to `a` over the bus, which `a` no longer hears.
        const short = c.query("short");
        assertEquals(await c.settle(short, 20_000), "terminal", "the question sent meanwhile");
        assertEquals(await c.settle(long, 5_000), "terminal", "the answer cut off");
        await healed;
        await stillWorks(c);
      },
      { tokens: 200, gapMs: 20 },
      ["d:interrupted"],
    ),
});

Deno.test({
  name: "a question sent through a process that is cut off from Postgres for 1.5 s reaches the " +
    "holder once it is back, and is answered once; nothing interrupted",
  ...opts,
  fn: () =>
    withCluster(async (cluster) => {
      const { a, c, id } = await relayedMidAnswer(cluster);
      const healed = cluster.partition(other(cluster, a), 1500);
      // The relay cannot publish it now: it must keep it and send it again, in order.
      const short = c.query("short");
      assertEquals(await c.settle(id, 15_000), "terminal", "the answer streaming on the holder");
      assertEquals(await c.settle(short, 15_000), "terminal", "the question sent meanwhile");
      await healed;
      await stillWorks(c);
    }, { tokens: 100, gapMs: 20 }),
});

Deno.test({
  name: "a client that keeps sending through the other process while the holder is cut off " +
    "is closed with 1013 once 512 of its frames wait there; it resumes and goes on",
  ...opts,
  fn: () =>
    withCluster(
      async (cluster) => {
        const { a, c, id } = await relayedMidAnswer(cluster);
        const healed = cluster.partition(a, 10_000);
        const closed = c.closed;
        // One past what may wait unanswered for a holder that gives no answer: that one is
        // refused by closing the socket.
        c.sendRaw(Array.from({ length: 513 }, (_, i) => ({ type: "ping", id: `p${i}` })));
        assertEquals(await deadline(closed, 5000, "the socket closed"), 1013, "try again later");
        await c.resume(other(cluster, a));
        assertEquals(await c.settle(id, 20_000), "terminal", "the answer cut off");
        await healed;
        await stillWorks(c);
      },
      { tokens: 200, gapMs: 20 },
      ["d:interrupted"],
    ),
});

Deno.test({
  name: "SIGTERM of a holder whose only socket is on the other process, over a slow database: " +
    "the other hears it let go (no waiting out the holder's silence) and answers what comes next",
  ...opts,
  fn: () =>
    withCluster(
      async (cluster) => {
        const { a, c, id } = await relayedMidAnswer(cluster);
        // A database in another region: every round trip of `a` takes 200 ms from here, so its
        // release (a write, then a NOTIFY) is still under way while the process stops.
        a.proxy!.delayMs = 100;
        await cluster.stop(a, "SIGTERM");
        assertEquals(await c.settle(id, 15_000), "terminal", "the answer in flight");
        await a.proc.status;
        await stillWorks(c);
        assertEquals(
          cluster.logsAbout("relay_holder_silent"),
          [],
          "the release was announced before the stopping process closed its store",
        );
      },
      undefined,
      [],
      { DRAIN_GRACE_SECONDS: "30" },
    ),
});

function count(xs: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

Deno.test({
  name: "with SUPABASE_DB_URL alone (nothing else inherited), `auto` picks Postgres and a " +
    "session resumes on another process",
  ...opts,
  async fn() {
    const { startServerProcess } = await import("./process.ts");
    const { DATABASE_URL } = await import("./db.ts");
    const { TestClient } = await import("./helpers.ts");
    const only = { SUPABASE_DB_URL: DATABASE_URL, OPENROUTER_API_KEY: "" };
    const a = await startServerProcess(only, undefined, { clearEnv: true });
    const b = await startServerProcess(only, undefined, { clearEnv: true });
    try {
      for (const p of [a, b]) {
        const health = await (await fetch(`${p.url}/health`)).json();
        assertEquals([health.store.kind, health.store.state], ["postgres", "ok"]);
        const started = JSON.parse(p.lines.find((l) => l.includes('"server_started"'))!);
        assertEquals(started.store, "postgres", started.store_why);
      }
      const { client, connected } = await TestClient.open(a.wsUrl);
      client.send({ type: "ping", id: "p" });
      const pong = await client.next((f) => f.type === "pong", "pong");
      await client.close();
      // Durable once written (a flush is 20 ms by default): B finds it.
      let resumed: Frame | undefined;
      for (let i = 0; i < 20 && !resumed; i++) {
        const again = await TestClient.connect(
          `${b.wsUrl}?session_id=${connected.session_id}&last_seq=${pong.seq}`,
        );
        const first = await again.waitFor((f) => f.seq === 0 || f.seq === 1, "first frame");
        if (first.event === "resumed") resumed = first;
        await again.close();
        if (!resumed) await new Promise((r) => setTimeout(r, 50));
      }
      assertEquals(resumed?.session_id, connected.session_id, "resumed on the other process");
    } finally {
      await a.kill("SIGTERM");
      await b.kill("SIGTERM");
    }
  },
});
