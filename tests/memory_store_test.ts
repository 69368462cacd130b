/**
 * The memory half of the store contract, for both stores: conversations are
 * listed, searched and cleared per user, kept past their sockets, and bad
 * search input never errors; a conversation keeps its newest messages up to the
 * cap. Postgres alone: the retention, and what another process sees.
 */
import { assert, assertEquals } from "./assert.ts";
import { DATABASE_URL, dbAvailable } from "./db.ts";
import { tempDatabase, until } from "./store_fixtures.ts";
import {
  MemoryStore,
  type SessionStore,
  type StoreLimits,
} from "../supabase/functions/_shared/store/store.ts";
import { PostgresStore } from "../supabase/functions/_shared/store/postgres.ts";
import { WriteBuffer } from "../supabase/functions/_shared/store/write_buffer.ts";
import { createLogger } from "../supabase/functions/_shared/platform/log.ts";
import { DEFAULT_MEMORY_MAX_MESSAGES } from "../supabase/functions/_shared/store/memory.ts";
import { conversationSessionId } from "../supabase/functions/_shared/session/conversation.ts";
import type { ChatMessage } from "../supabase/functions/_shared/model/model.ts";

const limits: StoreLimits = {
  maxHistory: 50,
  maxHistoryChars: 100_000,
  replayMaxFrames: 100,
  replayMaxBytes: 1 << 20,
};

/** A small memory cap, so the tests go past it in a few exchanges. */
const CAP = 10;
const capped: StoreLimits = { ...limits, memoryMaxMessages: CAP };

const DAY = 86_400_000;

function pgStore(
  url = DATABASE_URL,
  over: Partial<{ instance: string; expiryMs: number; limits: StoreLimits }> = {},
) {
  return new PostgresStore({
    url,
    poolSize: 2,
    flushMs: 5,
    limits: over.limits ?? limits,
    instance: over.instance ?? crypto.randomUUID(),
    leaseMs: 1000,
    expiryMs: over.expiryMs ?? 60_000,
    log: createLogger("error", [], () => {}),
  });
}

const stores: [string, (l?: StoreLimits) => SessionStore, boolean][] = [
  ["memory", (l = limits) => new MemoryStore(l), false],
  ["postgres", (l = limits) => pgStore(DATABASE_URL, { limits: l }), !dbAvailable],
];

const frame = (seq: number) => ({ seq, json: JSON.stringify({ type: "pong", seq }) });

/** Opens a conversation of `owner` in `store` and returns its session id. */
async function open(store: SessionStore, owner: string | null, name: string): Promise<string> {
  const id = await conversationSessionId(owner, name);
  store.create(id, owner, name);
  return id;
}

/** One exchange: a question and its answer. */
const qa = (q: string, a: string): ChatMessage[] => [
  { role: "user", content: q },
  { role: "assistant", content: a },
];

/** A fresh user id, so runs against a shared database never meet. */
const user = (who: string) => `${who}-${crypto.randomUUID()}`;

for (const [name, make, ignore] of stores) {
  Deno.test({
    name: `memory contract (${name}): conversations are listed newest first with their ` +
      "message counts; plain sessions and tool traffic are not memory",
    ignore,
    async fn() {
      const store = make();
      const alice = user("alice");
      const plain = crypto.randomUUID();
      const ids: string[] = [plain];
      try {
        const trip = await open(store, alice, "trip");
        const work = await open(store, alice, "work");
        ids.push(trip, work);
        store.create(plain, alice);
        await store.appendHistory(plain, qa("plain lisbon", "plain answer"));
        await store.appendHistory(trip, [
          ...qa("Trams in Lisbon?", "Tram 28 goes up the hill."),
          { role: "assistant", content: null, tool_calls: [] },
          { role: "assistant", content: "   " },
          { role: "tool", tool_call_id: "t1", content: "lisbon tool result" },
        ]);
        await store.flush();
        await new Promise((r) => setTimeout(r, 5)); // distinct timestamps
        await store.appendHistory(work, qa("Deadline?", "Friday."));
        store.appendFrame(work, frame(1));
        await store.flush();
        const list = await store.conversations(alice);
        assertEquals(list.map((c) => [c.name, c.messages]), [["work", 2], ["trip", 2]]);
        assert(!Number.isNaN(Date.parse(list[0].updated_at)), "updated_at is ISO 8601");
        const hits = await store.searchMemory(alice, "lisbon", 10);
        assertEquals(hits.map((h) => [h.conversation, h.role, h.content]), [
          ["trip", "user", "Trams in Lisbon?"],
        ]);
        assert(!Number.isNaN(Date.parse(hits[0].timestamp)) && hits[0].score > 0);
        assertEquals(await store.conversations(user("nobody")), []);
      } finally {
        for (const id of ids) await store.delete(id);
        await store.close();
      }
    },
  });

  Deno.test({
    name: `memory contract (${name}): users never see, search or clear each other's ` +
      "conversations, of the same name or not",
    ignore,
    async fn() {
      const store = make();
      const a = user("a");
      const b = user("b");
      const ids: string[] = [];
      try {
        const aTrip = await open(store, a, "trip");
        const bTrip = await open(store, b, "trip");
        const bOther = await open(store, b, "secret-plans");
        ids.push(aTrip, bTrip, bOther);
        assert(aTrip !== bTrip, "one name, two users, two conversations");
        await store.appendHistory(aTrip, qa("alpha question", "alpha answer"));
        await store.appendHistory(bTrip, qa("alpha from b", "beta answer"));
        await store.appendHistory(bOther, qa("gamma", "delta"));
        await store.flush();
        assertEquals((await store.conversations(a)).map((c) => c.name), ["trip"]);
        assertEquals(
          (await store.searchMemory(a, "alpha beta gamma delta", 50)).map((h) => h.content)
            .sort(),
          ["alpha answer", "alpha question"],
        );
        assertEquals(await store.clearMemory(a, "secret-plans"), [], "not a's to clear");
        assertEquals(await store.clearMemory(a), [aTrip], "all of a's: only a's");
        assertEquals((await store.searchMemory(b, "gamma", 10)).length, 1, "b keeps everything");
        assertEquals((await store.history(bTrip)).length, 2);
        assertEquals(await store.searchMemory(a, "alpha", 10), []);
      } finally {
        for (const id of ids) await store.delete(id);
        await store.close();
      }
    },
  });

  Deno.test({
    name: `memory contract (${name}): search ranks by how many words a message holds, ` +
      "then the newest; the limit holds and long messages are cut",
    ignore,
    async fn() {
      const store = make();
      const owner = user("ranker");
      const ids: string[] = [];
      try {
        const one = await open(store, owner, "one");
        const two = await open(store, owner, "two");
        ids.push(one, two);
        await store.appendHistory(one, qa("red apples", "green pears and red apples and plums"));
        await store.flush();
        await new Promise((r) => setTimeout(r, 5));
        await store.appendHistory(two, qa("blue cars", `apples ${"x".repeat(5000)}`));
        await store.flush();
        const hits = await store.searchMemory(owner, "RED Apples plums", 10);
        assertEquals(hits.map((h) => h.conversation + ":" + h.content.slice(0, 11)), [
          "one:green pears",
          "one:red apples",
          "two:apples xxxx",
        ]);
        assert(hits[0].score > hits[1].score && hits[1].score > hits[2].score);
        assertEquals(hits[2].content.length, 2001, "cut to 2000 characters and an ellipsis");
        assertEquals((await store.searchMemory(owner, "blue red", 1)).map((h) => h.content), [
          "blue cars",
        ], "a tie goes to the newest");
      } finally {
        for (const id of ids) await store.delete(id);
        await store.close();
      }
    },
  });

  Deno.test({
    name: `memory contract (${name}): any search input is answered, never an error`,
    ignore,
    async fn() {
      const store = make();
      const owner = user("fuzz");
      const ids: string[] = [];
      try {
        const id = await open(store, owner, "unicode");
        ids.push(id);
        await store.appendHistory(id, qa("Über naïve café 東京 🚋", "o'clock C++ e-mail"));
        await store.flush();
        const inputs = [
          "",
          "   ",
          '"',
          '"unclosed phrase',
          "-",
          "--",
          "or",
          "or or or",
          "a & b | !c",
          "(((",
          "<->",
          "foo:*",
          "\\",
          "'; drop table agent_websocket.messages; --",
          "🚋",
          "\u200b",
          "x".repeat(500),
          "word ".repeat(100),
          "ÜBER",
        ];
        for (const q of inputs) {
          const hits = await store.searchMemory(owner, q, 10);
          assert(Array.isArray(hits), `answered: ${JSON.stringify(q)}`);
        }
        assertEquals((await store.searchMemory(owner, "ÜBER", 10)).length, 1, "case-folded");
        assertEquals((await store.searchMemory(owner, "東京", 10)).length, 1, "any script");
        assertEquals((await store.searchMemory(owner, '"naïve"', 10)).length, 1, "quotes are text");
        assertEquals(await store.searchMemory(owner, "", 10), []);
      } finally {
        for (const id of ids) await store.delete(id);
        await store.close();
      }
    },
  });

  Deno.test({
    name: `memory contract (${name}): clearing one conversation, then all, empties history ` +
      "and search",
    ignore,
    async fn() {
      const store = make();
      const owner = user("clear");
      const ids: string[] = [];
      try {
        const x = await open(store, owner, "x");
        const y = await open(store, owner, "y");
        ids.push(x, y);
        await store.appendHistory(x, qa("kiwi in x", "ok"));
        await store.appendHistory(y, qa("kiwi in y", "ok"));
        await store.flush();
        assertEquals(await store.clearMemory(owner, "x"), [x]);
        assertEquals(await store.history(x), []);
        assertEquals((await store.searchMemory(owner, "kiwi", 10)).map((h) => h.conversation), [
          "y",
        ]);
        // What is said after a clear is remembered again.
        await store.appendHistory(x, qa("mango", "ok"));
        await store.flush();
        assertEquals((await store.history(x)).length, 2);
        assertEquals((await store.clearMemory(owner)).sort(), [x, y].sort());
        assertEquals(await store.searchMemory(owner, "kiwi mango ok", 10), []);
        assertEquals((await store.conversations(owner)).map((c) => [c.name, c.messages]).sort(), [
          ["x", 0],
          ["y", 0],
        ], "cleared conversations still exist, empty");
      } finally {
        for (const id of ids) await store.delete(id);
        await store.close();
      }
    },
  });

  Deno.test({
    name: `memory contract (${name}): past MEMORY_MAX_MESSAGES a conversation drops its ` +
      "oldest messages at upkeep; search and the list show what is kept; one under the cap is " +
      "untouched",
    ignore,
    async fn() {
      const store = make(capped);
      const owner = user("capped");
      const ids: string[] = [];
      /** Which of `words` search finds, in the order given. */
      const found = async (words: string[]) => {
        const hits = await store.searchMemory(owner, words.join(" "), 50);
        const contents = new Set(hits.map((h) => h.content));
        return words.filter((w) => [...contents].some((c) => c.split(" ").includes(w)));
      };
      const counts = async () =>
        Object.fromEntries((await store.conversations(owner)).map((c) => [c.name, c.messages]));
      try {
        const long = await open(store, owner, "long");
        const short = await open(store, owner, "short");
        ids.push(long, short);
        // 8 exchanges, 16 messages, each appended on its own (many within one millisecond).
        for (let i = 0; i < 8; i++) {
          await store.appendHistory(long, qa(`ask${i} topic`, `reply${i} topic`));
        }
        for (let i = 0; i < 3; i++) {
          await store.appendHistory(short, qa(`small${i} topic`, `tiny${i} topic`));
        }
        await store.flush();
        await store.maintain();
        assertEquals(await counts(), { long: CAP, short: 6 });
        // The 10 newest: ask3 … reply7; the 6 oldest (ask0 … reply2) are gone.
        assertEquals(
          await found(["ask0", "reply0", "ask2", "reply2", "ask3", "reply3", "ask7", "reply7"]),
          ["ask3", "reply3", "ask7", "reply7"],
        );
        assertEquals(await found(["small0", "tiny0", "small2", "tiny2"]), [
          "small0",
          "tiny0",
          "small2",
          "tiny2",
        ], "the conversation under the cap keeps everything");
        assertEquals((await store.searchMemory(owner, "topic", 50)).length, CAP + 6);
        // It goes on: the newest stay, and the short one is trimmed once it passes the cap.
        await store.appendHistory(long, qa("ask8 topic", "reply8 topic"));
        for (let i = 3; i < 6; i++) {
          await store.appendHistory(short, qa(`small${i} topic`, `tiny${i} topic`));
        }
        await store.flush();
        await store.maintain();
        assertEquals(await counts(), { long: CAP, short: CAP });
        assertEquals(await found(["ask3", "reply3", "ask4", "reply8"]), ["ask4", "reply8"]);
        assertEquals(await found(["small0", "tiny0", "small1", "small5"]), ["small1", "small5"]);
        // The history the model sees is bounded on its own (MAX_HISTORY), not by the cap.
        assertEquals((await store.history(long)).length, 18);
      } finally {
        for (const id of ids) await store.delete(id);
        await store.close();
      }
    },
  });

  Deno.test({
    name: `memory contract (${name}): a released conversation is kept; a rejoin claims it ` +
      "with its history and last seq",
    ignore,
    async fn() {
      const store = make();
      const owner = user("rejoin");
      const ids: string[] = [];
      try {
        const id = await open(store, owner, "kept");
        ids.push(id);
        for (let seq = 1; seq <= 3; seq++) store.appendFrame(id, frame(seq));
        await store.appendHistory(id, qa("remember me", "I will"));
        await store.release(id);
        const loaded = await store.load(id);
        assertEquals([loaded?.owner, loaded?.conversation, loaded?.lastSeq], [owner, "kept", 3]);
        const claimed = await store.claim(id);
        assertEquals([claimed?.conversation, claimed?.lastSeq], ["kept", 3]);
        assertEquals(await store.history(id), qa("remember me", "I will"));
        // It goes on remembering after the rejoin.
        await store.appendHistory(id, qa("again", "yes"));
        await store.flush();
        assertEquals((await store.conversations(owner))[0].messages, 4);
      } finally {
        for (const id of ids) await store.delete(id);
        await store.close();
      }
    },
  });
}

Deno.test("memory store: plain sessions are not kept; a conversation's search log is bounded; a replay from before a release is a gap", async () => {
  const store = new MemoryStore(limits);
  const plain = crypto.randomUUID();
  store.create(plain, null);
  await store.appendHistory(plain, qa("q", "a"));
  await store.release(plain);
  assertEquals([await store.load(plain), await store.claim(plain)], [null, null]);
  const owner = user("bounded");
  const id = await open(store, owner, "long");
  for (let i = 0; i < DEFAULT_MEMORY_MAX_MESSAGES / 2 + 50; i++) {
    await store.appendHistory(id, qa(`q${i}`, `a${i}`));
  }
  assertEquals(
    (await store.conversations(owner))[0].messages,
    DEFAULT_MEMORY_MAX_MESSAGES,
    "MEMORY_MAX_MESSAGES unset: the default",
  );
  assertEquals(await store.searchMemory(owner, "q0", 10), [], "the oldest went first");
  store.appendFrame(id, frame(1));
  store.appendFrame(id, frame(2));
  await store.release(id);
  assertEquals(store.memoryBytes, 0, "its frames were let go of");
  const gap = await store.framesAfter(id, 0);
  assert(!gap.ok && gap.reason === "trimmed");
  const after = await store.framesAfter(id, 2);
  assert(after.ok && after.frames.length === 0);
});

Deno.test({
  name: "postgres store: a conversation is kept for the retention, a plain session for the " +
    "resume window; expired, both go with their messages",
  ignore: !dbAvailable,
  async fn() {
    const db = await tempDatabase(true);
    const store = pgStore(db.url, { expiryMs: 100 });
    const owner = user("retained");
    try {
      const conv = await open(store, owner, "long-lived");
      const plain = crypto.randomUUID();
      store.create(plain, owner);
      await store.appendHistory(conv, qa("keep this", "kept"));
      store.appendFrame(conv, frame(1));
      await store.flush();
      const expiry = async (id: string) => {
        const [r] = await db.sql<{ ms: number }[]>`
          select extract(epoch from expires_at - now()) * 1000 as ms
          from agent_websocket.sessions where id = ${id}`;
        return r ? Number(r.ms) : null;
      };
      assert((await expiry(conv))! > 29 * DAY, "created: the retention");
      assert((await expiry(plain))! < 1000, "created: the resume window");
      await store.maintain();
      assert((await expiry(conv))! > 29 * DAY, "renewed: the retention");
      await store.release(conv);
      await store.release(plain);
      assert((await expiry(conv))! > 29 * DAY, "released: the retention from now");
      // The plain session expires on its own; the conversation only when its time is up.
      await db.sql`update agent_websocket.sessions set expires_at = now() - interval '1 second'
        where id = ${conv}`;
      await until(async () => {
        await store.maintain();
        return (await expiry(conv)) === null && (await expiry(plain)) === null;
      }, "both expired sessions deleted");
      const [{ n }] = await db.sql`select count(*)::int as n from agent_websocket.messages`;
      assertEquals(n, 0, "messages go with their conversation");
    } finally {
      await store.close();
      await db.drop();
    }
  },
});

Deno.test({
  name: "postgres store: upkeep trims only conversations written to since the last one; one " +
    "over the cap and left alone is trimmed once it is written to again",
  ignore: !dbAvailable,
  async fn() {
    const db = await tempDatabase(true);
    const store = pgStore(db.url, { limits: capped });
    const owner = user("stale");
    try {
      const stale = await open(store, owner, "stale");
      await store.flush();
      // Already past the cap (say, from before the cap was set or lowered).
      await db.sql`
        insert into agent_websocket.messages (id, session_id, owner, conversation, role, content,
          created_at)
        select gen_random_uuid(), ${stale}, ${owner}, 'stale', 'user', 'old' || i,
          now() - interval '1 day' + i * interval '1 second'
        from generate_series(1, 20) as i`;
      await store.maintain();
      assertEquals((await store.conversations(owner))[0].messages, 20, "not written: not read");
      await store.appendHistory(stale, qa("newest words", "ok"));
      await store.flush();
      await store.maintain();
      assertEquals((await store.conversations(owner))[0].messages, CAP);
      assertEquals(
        (await store.searchMemory(owner, "old1 old12 old13", 10)).map((h) => h.content),
        [
          "old13",
        ],
        "the oldest went first",
      );
      assertEquals((await store.searchMemory(owner, "newest", 10)).map((h) => h.content), [
        "newest words",
      ]);
    } finally {
      await store.close();
      await db.drop();
    }
  },
});

Deno.test({
  name: "postgres store: owner null (auth off) is one namespace of its own",
  ignore: !dbAvailable,
  async fn() {
    const db = await tempDatabase(true);
    const store = pgStore(db.url);
    try {
      const shared = await open(store, null, "room");
      const named = await open(store, "user-1", "room");
      await store.appendHistory(shared, qa("shared words", "ok"));
      await store.appendHistory(named, qa("private words", "ok"));
      await store.flush();
      assertEquals((await store.searchMemory(null, "words", 10)).map((h) => h.content), [
        "shared words",
      ]);
      assertEquals((await store.conversations(null)).map((c) => c.name), ["room"]);
      assertEquals(await store.clearMemory(null), [shared]);
      assertEquals((await store.searchMemory("user-1", "words", 10)).length, 1);
      assertEquals(await store.searchMemory("", "words", 10), [], "an empty id is nobody");
    } finally {
      await store.close();
      await db.drop();
    }
  },
});

Deno.test({
  name: "postgres store: another process claims a conversation and remembers in it; a clear " +
    "made elsewhere sticks once the holder forgets its cached history, and covers the frames " +
    "it sent until then",
  ignore: !dbAvailable,
  async fn() {
    const a = pgStore();
    const b = pgStore();
    const owner = user("two-procs");
    const id = await conversationSessionId(owner, "shared");
    try {
      a.create(id, owner, "shared");
      await a.appendHistory(id, qa("first", "one"));
      await a.flush();
      await a.release(id);
      const claimed = await b.claim(id);
      assertEquals(claimed?.conversation, "shared");
      await b.appendHistory(id, qa("second", "two"));
      b.appendFrame(id, { seq: 1, json: '{"seq":1,"said":"second"}' });
      await b.flush();
      assertEquals((await a.conversations(owner))[0].messages, 4, "b learned it from claim()");
      // a clears while b holds it; b is told and forgets what it cached. What b sent
      // before it heard (possibly from that cache) is cleared too, written or not.
      assertEquals(await a.clearMemory(owner, "shared"), [id]);
      b.appendFrame(id, { seq: 2, json: '{"seq":2,"said":"second, from the cache"}' });
      await b.forgetHistory([id]);
      b.appendFrame(id, { seq: 3, json: '{"seq":3,"said":"after"}' });
      await b.flush();
      for (const store of [a, b]) {
        const gap = await store.framesAfter(id, 0);
        assert(!gap.ok && gap.reason === "cleared" && gap.clearedSeq === 2, JSON.stringify(gap));
        assertEquals(await store.framesAfter(id, 2), {
          ok: true,
          frames: [{ seq: 3, json: '{"seq":3,"said":"after"}' }],
        });
      }
      // Frame 2 was written after b heard (it was waiting): never read, gone at b's upkeep.
      await b.maintain();
      const kept = await a.sql<{ seq: string }[]>`
        select seq from agent_websocket.frames where session_id = ${id} order by seq`;
      assertEquals(kept.map((r) => Number(r.seq)), [3]);
      await b.appendHistory(id, qa("third", "three"));
      await b.flush();
      const [row] = await a.sql<{ history: ChatMessage[] }[]>`
        select history from agent_websocket.sessions where id = ${id}`;
      assertEquals(row.history, qa("third", "three"));
      assertEquals((await a.searchMemory(owner, "first second third", 10)).map((h) => h.content), [
        "third",
      ]);
    } finally {
      await b.delete(id);
      await a.close();
      await b.close();
    }
  },
});

Deno.test({
  name: "postgres store: a schema without the conversations migration is named at start",
  ignore: !dbAvailable,
  async fn() {
    const db = await tempDatabase(true);
    try {
      await db.sql`drop table agent_websocket.messages`;
      const store = pgStore(db.url);
      const problem = await store.checkSchema(3000, false);
      await store.discard();
      assert(problem?.includes("agent_websocket.messages"), String(problem));
    } finally {
      await db.drop();
    }
  },
});

Deno.test("write buffer: messages for search wait in order, survive a failed write, stay bounded and go with a clear", () => {
  const buf = new WriteBuffer({ maxFrames: 1000, maxBytes: 1 << 20 });
  const msg = (content: string) => ({
    id: crypto.randomUUID(),
    role: "user" as const,
    content,
    at: new Date().toISOString(),
  });
  buf.memory("s1", [msg("a"), msg("b")]);
  const first = buf.take(100);
  buf.memory("s1", [msg("c")]);
  buf.restore(first); // the write failed: a and b go back in front of c
  const again = buf.take(100).filter((op) => op.kind === "memory");
  assertEquals(
    again.flatMap((op) => op.kind === "memory" ? op.messages : []).map((m) => m.content),
    [
      "a",
      "b",
      "c",
    ],
  );
  assert(buf.empty);
  const dropped = buf.memory("s2", Array.from({ length: 10_050 }, (_, i) => msg(`m${i}`)));
  assertEquals(dropped, 50, "bounded: the oldest go");
  buf.forgetMemory("s2");
  assert(buf.empty, "a clear drops what waited");
});
