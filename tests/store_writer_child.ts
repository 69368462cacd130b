/**
 * A process that writes through the Postgres store as a busy server would
 * (20 sessions streaming frames, history, open queries, reads, upkeep and
 * the bus) until told to stop on stdin; then it makes everything durable and
 * reports what it wrote. `store_faults_test.ts` cuts its database
 * connections at random meanwhile: an uncaught error kills this process,
 * which is exactly what the test looks for.
 *
 * Usage: deno run -A tests/store_writer_child.ts <database url>
 *
 * @module
 */
import { PostgresStore } from "../supabase/functions/_shared/store/postgres.ts";
import { createLogger } from "../supabase/functions/_shared/platform/log.ts";

const url = Deno.args[0];
const logLines: string[] = [];
const store = new PostgresStore({
  url,
  poolSize: 3,
  flushMs: 5,
  limits: {
    maxHistory: 50,
    maxHistoryChars: 100_000,
    replayMaxFrames: 1_000_000,
    replayMaxBytes: 1 << 30,
  },
  instance: `writer-${crypto.randomUUID()}`,
  leaseMs: 60_000,
  expiryMs: 600_000,
  log: createLogger("info", [], (line) => logLines.push(line)),
  queryTimeoutMs: 3000,
  retryBaseMs: 20,
  retryMaxMs: 200,
  downAfterMs: 60_000,
  // This process is about crashes and durability, not the buffer bound: room for long stalls.
  buffer: { maxFrames: 5_000_000, maxBytes: 1 << 30 },
});

const sessions = Array.from({ length: 20 }, () => crypto.randomUUID());
for (const id of sessions) store.create(id, null);
let seq = 0;
let busReceived = 0;
await store.bus.subscribe(() => busReceived++).catch(() => {});

const writing = setInterval(() => {
  seq++;
  for (const id of sessions) {
    store.appendFrame(id, {
      seq,
      json: JSON.stringify({ type: "delta", id: "q", delta: `token ${seq} `, seq }),
    });
  }
  if (seq % 25 === 0) {
    const id = sessions[seq % sessions.length];
    store.setOpenQueries(id, [`q-${seq}`]);
    store.appendHistory(id, [{ role: "user", content: `question ${seq}` }]).catch(() => {});
  }
}, 2);
const reading = setInterval(() => {
  store.load(sessions[0]).catch(() => {});
  store.framesAfter(sessions[1], Math.max(0, seq - 10)).catch(() => {});
  store.maintain().catch(() => {});
  store.bus.publish({ kind: "released", session: "none", from: "writer" }).catch(() => {});
}, 50);
const progress = setInterval(
  () => console.log(JSON.stringify({ seq, health: store.health() })),
  250,
);

for await (const line of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
  if (line.includes("stop")) break;
}
clearInterval(writing);
clearInterval(reading);
clearInterval(progress);
const until = Date.now() + 15_000;
for (;;) {
  try {
    await store.flush();
    if (store.health().pendingFrames === 0) break;
  } catch {
    // Still reconnecting.
  }
  if (Date.now() > until) break;
  await new Promise((r) => setTimeout(r, 50));
}
console.log(JSON.stringify({
  done: true,
  sessions,
  lastSeq: seq,
  health: store.health(),
  busReceived,
  log: logLines.map((l) => JSON.parse(l).event),
}));
await store.close().catch((err) => console.error(String(err)));
