/**
 * Conversation soak: sockets join and leave a handful of conversations many
 * times — fresh joins, resumes with `last_seq`, pings and queries while
 * others come and go, some dropped without a close frame — then everyone
 * leaves. Nothing may be left behind: no session held, no socket attached,
 * no connection counted, heap back near where it started. Every socket's
 * frames run on without gap or repeat, and every query ends once.
 *
 * `CONVERSATION_SOAK_CYCLES=<n>` runs more cycles (default 600, 30 at a time).
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import {
  collectGarbage,
  eventually,
  type Frame,
  isTerminal,
  startStack,
  TestClient,
} from "./helpers.ts";

const CYCLES = Number(Deno.env.get("CONVERSATION_SOAK_CYCLES") ?? 600);
const CONCURRENCY = 30;
const NAMES = Array.from({ length: 8 }, (_, i) => `room-${i}`);
const HEAP_SLACK = 40 * 1024 * 1024;

Deno.test("conversation soak: joins, resumes and leaves leave nothing behind", async () => {
  const stack = await startStack(
    {
      RESUME_WINDOW_SECONDS: "1",
      SWEEP_INTERVAL_SECONDS: "0.2",
      HEARTBEAT_SECONDS: "2",
      LOG_LEVEL: "warn",
      MAX_CONNECTIONS: "100000",
      MAX_CONNECTIONS_PER_USER: "100000",
      MAX_SESSIONS_PER_USER: "100000",
      // Sockets of one conversation share one queue: dozens may be asking at once here.
      MAX_QUEUE: "100",
    },
    { tokenDelayMs: 1 },
  );
  const sessions = stack.server.app.sessions;
  /** The highest seq seen per conversation, for resumes. */
  const lastSeen = new Map<string, number>();
  const problems: string[] = [];
  let queries = 0;
  let answered = 0;
  try {
    collectGarbage();
    const heapBefore = Deno.memoryUsage().heapUsed;
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < CYCLES) {
        const i = next++;
        const name = NAMES[Math.floor(i / 3) % NAMES.length];
        const resumeFrom = i % 3 === 0 ? lastSeen.get(name) : undefined;
        const url = `${stack.wsUrl}?conversation=${name}` +
          (resumeFrom !== undefined ? `&last_seq=${resumeFrom}` : "");
        const client = await TestClient.connect(url);
        const first: Frame = await client.waitFor(
          (f) => f.event === "connected" || f.event === "resumed",
          "joined",
          5000,
        );
        if (i % 4 === 0) {
          const id = client.query(`q${i}`);
          queries++;
          const end = await client.terminal(id, 10_000);
          if (end.type === "response") answered++;
          else problems.push(`query ${i}: ${end.code}`);
        } else {
          client.send({ type: "ping", id: `p${i}` });
          await client.waitFor((f) => f.type === "pong" && f.id === `p${i}`, "pong", 5000);
        }
        const mine = client.frames.filter((f) => f.seq > 0);
        for (let k = 1; k < mine.length; k++) {
          if (mine[k].seq !== mine[k - 1].seq + 1) {
            problems.push(
              `${name} socket ${i} (${first.event} from ${resumeFrom}): seq ${mine[k - 1].seq} ` +
                `then ${mine[k].seq}: ${
                  JSON.stringify(
                    client.frames.map((f) => [f.seq, f.type, f.event ?? f.state ?? ""]),
                  )
                }`,
            );
          }
        }
        if (first.event === "resumed" && mine.length > 0 && mine[0].seq !== resumeFrom! + 1) {
          problems.push(`${name} socket ${i}: resumed after ${resumeFrom}, got ${mine[0].seq}`);
        }
        for (const f of client.frames.filter(isTerminal)) {
          if (client.frames.filter((g) => isTerminal(g) && g.id === f.id).length !== 1) {
            problems.push(`${name}: query ${f.id} ended twice`);
          }
        }
        const top = mine.at(-1)?.seq ?? 0;
        if (top > (lastSeen.get(name) ?? 0)) lastSeen.set(name, top);
        // Every fifth one vanishes without a close frame; the rest close properly.
        if (i % 5 === 0) client.ws.close(4000);
        await client.close().catch(() => {});
      }
    }));
    assertEquals(problems, []);
    assert(queries > 0 && answered === queries, `${answered} of ${queries} queries answered`);

    // Everyone left: once the resume window has passed nothing is held.
    await eventually(() => sessions.size === 0, "every conversation let go", 15_000);
    const health = await (await fetch(`${stack.server.url}/health`)).json();
    assertEquals([health.sessions, health.in_flight, health.connections], [0, 0, 0]);

    await stack.sim.close();
    collectGarbage();
    const heapAfter = Deno.memoryUsage().heapUsed;
    assert(
      heapAfter - heapBefore < HEAP_SLACK,
      `heap grew ${((heapAfter - heapBefore) / 1048576).toFixed(1)} MB over ${CYCLES} cycles`,
    );

    // A conversation is kept after its sockets left: joining again continues its numbering.
    const [room] = NAMES;
    const again = await TestClient.connect(`${stack.wsUrl}?conversation=${room}`);
    const hello = await again.waitFor((f) => f.event === "connected", "rejoined");
    assert(hello.seq > (lastSeen.get(room) ?? 0), `seq continues: ${hello.seq}`);
    await again.close();
  } finally {
    await stack.server.shutdown("test_done");
    await stack.sim.close().catch(() => {});
  }
});
