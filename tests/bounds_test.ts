import { assert, assertEquals } from "./assert.ts";
import { FeedbackLog } from "../supabase/functions/_shared/session/feedback.ts";
import { UserLimits } from "../supabase/functions/_shared/platform/limits.ts";
import { TokenBucket } from "../supabase/functions/_shared/platform/rate_limit.ts";
import { readSse, SseEventTooLargeError } from "../supabase/functions/_shared/model/sse.ts";
import { isStorableText } from "../supabase/functions/_shared/protocol/frames.ts";

const at = new Date(0).toISOString();

Deno.test("feedback: one entry per response, later ratings replace earlier ones", () => {
  const log = new FeedbackLog();
  assertEquals(log.add({ id: "q1", rating: "up", comment: "good", at }), "added");
  assertEquals(log.add({ id: "q2", rating: "up", at }), "added");
  assertEquals(log.add({ id: "q1", rating: "down", comment: "on second thought", at }), "replaced");
  assertEquals(log.size, 2);
  assertEquals(log.get("q1")?.rating, "down");
  assertEquals(log.chars, "on second thought".length);
  assertEquals(log.entries().map((e) => e.id), ["q2", "q1"], "in order of last change");
});

Deno.test("feedback: 25,000 frames with 4000-character comments hold at most the bounds", () => {
  const log = new FeedbackLog({ maxEntries: 100, maxChars: 100_000 });
  const comment = "x".repeat(4000);
  const outcomes = new Map<string, number>();
  for (let i = 0; i < 25_000; i++) {
    // Half on one id (the attack), half on ever new ids.
    const id = i % 2 === 0 ? "same" : `q${i}`;
    const o = log.add({ id, rating: "up", comment, at });
    outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
  }
  assert(log.size <= 100, `entries: ${log.size}`);
  assert(log.chars <= 100_000, `chars: ${log.chars}`);
  assertEquals(log.size, 25, "100 000 characters of 4000-character comments");
  assert((outcomes.get("full") ?? 0) > 12_000, JSON.stringify([...outcomes]));
  // Short feedback still fits on a full character budget until the count is reached.
  const small = new FeedbackLog({ maxEntries: 3 });
  for (const id of ["a", "b", "c"]) assertEquals(small.add({ id, rating: "up", at }), "added");
  assertEquals(small.add({ id: "d", rating: "up", at }), "full");
  assertEquals(small.add({ id: "a", rating: "down", at }), "replaced", "a rating can change");
});

/** A clock the test moves by hand. */
function clock() {
  let t = 0;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

Deno.test("limits: a user's bucket outlives their sessions until it is full again", () => {
  const c = clock();
  const limits = new UserLimits({ perUser: 5, perMinute: 60, burst: 10, now: c.now });
  for (let i = 0; i < 10; i++) assertEquals(limits.take("u"), 0);
  assert(limits.take("u") > 0, "burst spent");
  limits.forget("u"); // the last session ended
  assert(limits.take("u") > 0, "a new session does not get a new burst");
  c.advance(10_000); // 60 per minute: 10 s refill the bucket
  limits.forget("u");
  assertEquals(limits.buckets, 0, "a full bucket is dropped");
  assertEquals(limits.take("u"), 0);
});

Deno.test("limits: buckets of users who went away are swept; memory stays bounded", () => {
  const c = clock();
  const limits = new UserLimits({ perUser: 5, perMinute: 60, burst: 10, now: c.now });
  for (let i = 0; i < 10_000; i++) for (let n = 0; n < 3; n++) limits.take(`client-${i}`);
  assertEquals(limits.buckets, 10_000);
  c.advance(1_000); // one of three tokens back: not full yet
  assertEquals(limits.sweep(), 0);
  c.advance(10_000);
  limits.take("someone");
  assertEquals(limits.buckets, 1, "the sweep ran from take() once a refill period passed");
});

Deno.test("limits: sessions per user are counted and capped", () => {
  const limits = new UserLimits({ perUser: 5, perMinute: 60, burst: 10, sessionsPerUser: 3 });
  for (let i = 0; i < 3; i++) assert(limits.acquireSession("u"));
  assert(!limits.acquireSession("u"), "the fourth is refused");
  assert(limits.acquireSession("v"), "another user is not affected");
  limits.releaseSession("u");
  assertEquals(limits.sessions("u"), 2);
  assert(limits.acquireSession("u"), "a freed slot can be used again");
  for (let i = 0; i < 3; i++) limits.releaseSession("u");
  assertEquals(limits.sessions("u"), 0);
  limits.releaseSession("u");
  assertEquals(limits.sessions("u"), 0, "release never goes below zero");
});

Deno.test("rate limit: a bucket is full at start and again after its refill time", () => {
  const c = clock();
  const bucket = new TokenBucket(120, 4, c.now);
  assert(bucket.full());
  bucket.take();
  assert(!bucket.full());
  assertEquals(bucket.refillMs, 2000);
  c.advance(499);
  assert(!bucket.full());
  c.advance(1);
  assert(bucket.full());
});

function streamOf(parts: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const p of parts) c.enqueue(enc.encode(p));
      c.close();
    },
  });
}

async function readAll(parts: string[], maxEventBytes: number) {
  const got: unknown[] = [];
  try {
    for await (const m of readSse(streamOf(parts), { maxEventBytes })) got.push(m);
  } catch (err) {
    return { got, err };
  }
  return { got, err: null };
}

Deno.test("sse: an event may be as large as the limit, not larger", async () => {
  const fits = await readAll(["data: ", "a".repeat(1000), "\n\n", "data: b\n\n"], 1100);
  assertEquals(fits.err, null);
  assertEquals(fits.got.length, 2);
  const line = await readAll(["data: ", ...Array(20).fill("a".repeat(100))], 1024);
  assert(line.err instanceof SseEventTooLargeError, String(line.err));
  const lines = await readAll(Array(40).fill("data: aaaaaaaaaaaaaaaaaaaaaaaaaa\n"), 1024);
  assert(lines.err instanceof SseEventTooLargeError, "data lines without a blank line");
  // Comments in between do not reset the count: the data keeps accumulating.
  const mixed = await readAll(Array(40).fill("data: aaaaaaaaaaaaaaaaaaaaaa\n: ping\n"), 1024);
  assert(mixed.err instanceof SseEventTooLargeError, "comments are not progress");
  // Many small events in total far over the limit are fine.
  const many = await readAll(Array(500).fill("data: aaaaaaaaaaaaaaaa\n\n"), 1024);
  assertEquals([many.err, many.got.length], [null, 500]);
});

Deno.test("text: storable means no U+0000 and no unpaired surrogate", () => {
  assert(isStorableText("héllo 👋 \t\n"));
  assert(!isStorableText("a\u0000b"));
  assert(!isStorableText("\ud800"));
  assert(!isStorableText("x\udfff"));
  assert(!isStorableText("\ud83d"));
  assert(isStorableText("\ud83d\ude00"));
});
