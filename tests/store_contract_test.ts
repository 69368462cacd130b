import { assert, assertEquals } from "./assert.ts";
import { DATABASE_URL, dbAvailable } from "./db.ts";
import {
  MemoryStore,
  type SessionStore,
  type StoreLimits,
} from "../supabase/functions/_shared/store/store.ts";
import { PostgresStore } from "../supabase/functions/_shared/store/postgres.ts";
import { createLogger } from "../supabase/functions/_shared/platform/log.ts";

const limits: StoreLimits = {
  maxHistory: 4,
  maxHistoryChars: 10_000,
  replayMaxFrames: 5,
  replayMaxBytes: 1 << 20,
};

const frame = (seq: number) => ({ seq, json: JSON.stringify({ type: "pong", seq }) });

function pgStore(instance: string = crypto.randomUUID()): PostgresStore {
  return new PostgresStore({
    url: DATABASE_URL,
    poolSize: 2,
    flushMs: 5,
    limits,
    instance,
    leaseMs: 1000,
    expiryMs: 60_000,
    log: createLogger("error", [], () => {}),
  });
}

const stores: [string, () => SessionStore, boolean][] = [
  ["memory", () => new MemoryStore(limits), false],
  ["postgres", () => pgStore(), !dbAvailable],
];

for (const [name, make, ignore] of stores) {
  Deno.test({
    name: `store contract (${name}): history is kept, trimmed and cleared`,
    ignore,
    async fn() {
      const store = make();
      const id = crypto.randomUUID();
      try {
        assertEquals(store.health().state, "ok");
        store.create(id, "owner-1");
        const m = (i: number) => [
          { role: "user" as const, content: `q${i}` },
          { role: "assistant" as const, content: `a${i}` },
        ];
        await store.appendHistory(id, m(1));
        await store.appendHistory(id, m(2));
        await store.appendHistory(id, m(3));
        assertEquals(await store.history(id), [...m(2), ...m(3)]);
        await store.clearHistory(id);
        assertEquals(await store.history(id), []);
      } finally {
        await store.delete(id);
        await store.close();
      }
    },
  });

  Deno.test({
    name: `store contract (${name}): frames replay after a seq, and a trimmed log reports the gap`,
    ignore,
    async fn() {
      const store = make();
      const id = crypto.randomUUID();
      try {
        store.create(id, null);
        for (let seq = 1; seq <= 4; seq++) store.appendFrame(id, frame(seq));
        const r = await store.framesAfter(id, 2);
        assert(r.ok);
        assertEquals(r.frames.map((f) => f.seq), [3, 4]);
        assertEquals(r.frames[0].json, frame(3).json, "byte for byte");
        await store.flush();
        for (let seq = 5; seq <= 12; seq++) store.appendFrame(id, frame(seq));
        await store.flush();
        // Upkeep trims durable frames beyond replayMaxFrames, a bounded batch per pass
        // across all sessions in the database, so it may take a few passes.
        let gap = await store.framesAfter(id, 1);
        for (let pass = 0; gap.ok && pass < 100; pass++) {
          await store.maintain();
          gap = await store.framesAfter(id, 1);
        }
        assert(!gap.ok, "frames 2.. are gone");
        assertEquals([gap.reason, gap.missingSeq, gap.oldestSeq], ["trimmed", 2, 8]);
        const tail = await store.framesAfter(id, 9);
        assert(tail.ok);
        assertEquals(tail.frames.map((f) => f.seq), [10, 11, 12]);
      } finally {
        await store.delete(id);
        await store.close();
      }
    },
  });
}

Deno.test({
  name: "postgres store: another process loads, claims and continues a session",
  ignore: !dbAvailable,
  async fn() {
    const a = pgStore("instance-a");
    const b = pgStore("instance-b");
    const id = crypto.randomUUID();
    try {
      a.create(id, "alice");
      a.appendFrame(id, frame(1));
      a.appendFrame(id, frame(2));
      a.setOpenQueries(id, ["q-1"]);
      await a.appendHistory(id, [{ role: "user", content: "hi" }, {
        role: "assistant",
        content: "yo",
      }]);
      await a.flush();
      const seen = await b.load(id);
      assertEquals(
        [seen?.owner, seen?.lastSeq, seen?.openQueries, seen?.instance, seen?.instanceAlive],
        ["alice", 2, ["q-1"], "instance-a", true],
      );
      const claimed = await b.claim(id);
      assertEquals(claimed?.instance, "instance-b");
      assertEquals((await b.history(id)).length, 2);
      const r = await b.framesAfter(id, 0);
      assert(r.ok);
      assertEquals(r.frames.map((f) => f.seq), [1, 2]);
      // A, which lost the session, can no longer write into its sequence, and is told.
      const lost: string[] = [];
      a.onLost = (session) => lost.push(session);
      a.appendFrame(id, frame(3));
      await a.flush();
      assertEquals(lost, [id]);
      const after = await b.framesAfter(id, 2);
      assert(after.ok);
      assertEquals(after.frames, [], "the old holder's late frame is fenced out");
      assertEquals((await b.load(id))?.lastSeq, 2);
      assertEquals(await b.load("no-such-session"), null);
    } finally {
      await b.delete(id);
      await a.close();
      await b.close();
    }
  },
});

Deno.test({
  name: "postgres store: sessions nobody keeps alive are deleted by upkeep",
  ignore: !dbAvailable,
  async fn() {
    const short = new PostgresStore({
      url: DATABASE_URL,
      poolSize: 1,
      flushMs: 5,
      limits,
      instance: "gone",
      leaseMs: 100,
      expiryMs: 100,
      log: createLogger("error", [], () => {}),
    });
    const other = pgStore();
    const id = crypto.randomUUID();
    try {
      short.create(id, null);
      short.appendFrame(id, frame(1));
      await short.flush();
      await short.close(); // the holder goes away: nobody renews the session
      const until = Date.now() + 3000;
      // load() hides expired sessions at once; upkeep then deletes them.
      while ((await other.load(id)) !== null) {
        if (Date.now() > until) throw new Error("session never expired");
        await new Promise((r) => setTimeout(r, 50));
      }
      await other.maintain();
      const [{ n }] = await other.sql`
        select count(*)::int as n from agent_websocket.sessions where id = ${id}`;
      assertEquals(n, 0);
      const [{ f }] = await other.sql`
        select count(*)::int as f from agent_websocket.frames where session_id = ${id}`;
      assertEquals(f, 0, "frames go with their session");
    } finally {
      await other.close();
    }
  },
});

Deno.test({
  name: "postgres store: row-level security leaves the anon role nothing",
  ignore: !dbAvailable,
  async fn() {
    const store = pgStore();
    try {
      const [row] = await store.sql`
        select relrowsecurity as rls from pg_class
        where oid = 'agent_websocket.sessions'::regclass`;
      assertEquals(row.rls, true);
      const [frames] = await store.sql`
        select relrowsecurity as rls from pg_class
        where oid = 'agent_websocket.frames'::regclass`;
      assertEquals(frames.rls, true);
    } finally {
      await store.close();
    }
  },
});

Deno.test({
  name: "postgres store: a hole in the durable log is reported as lost, with the true oldest " +
    "kept frame; a resume after the hole is complete",
  ignore: !dbAvailable,
  async fn() {
    const store = pgStore();
    const id = crypto.randomUUID();
    try {
      store.create(id, null);
      // Frame 4 was sent by a process that died before writing it.
      for (const seq of [1, 2, 3, 5, 6]) store.appendFrame(id, frame(seq));
      await store.flush();
      const r = await store.framesAfter(id, 0);
      assert(!r.ok);
      assertEquals([r.reason, r.missingSeq, r.oldestSeq], ["lost", 4, 1]);
      const fromTwo = await store.framesAfter(id, 2);
      assert(!fromTwo.ok);
      assertEquals([fromTwo.reason, fromTwo.missingSeq], ["lost", 4]);
      const after = await store.framesAfter(id, 4);
      assert(after.ok);
      assertEquals(after.frames.map((f) => f.seq), [5, 6]);
    } finally {
      await store.delete(id);
      await store.close();
    }
  },
});
