/**
 * Memory through a real server: the `conversations`, `search_memory` and
 * `clear_memory` commands, the `search_memory` tool, bad arguments, and what
 * one user can never see of another's. Some conversations are seeded straight
 * into the store; the others are joined with `?conversation=`.
 */
import { assert, assertEquals } from "./assert.ts";
import { type Frame, type Stack, startStack, TestClient } from "./helpers.ts";
import { type AuthServer, hs256, startAuthServer } from "./auth_server.ts";
import { dbAvailable } from "./db.ts";
import { tempDatabase } from "./store_fixtures.ts";
import { MemoryStore, type SessionStore } from "../supabase/functions/_shared/store/store.ts";
import { PostgresStore } from "../supabase/functions/_shared/store/postgres.ts";
import { createLogger } from "../supabase/functions/_shared/platform/log.ts";
import { conversationSessionId } from "../supabase/functions/_shared/session/conversation.ts";

const limits = {
  maxHistory: 50,
  maxHistoryChars: 200_000,
  replayMaxFrames: 2000,
  replayMaxBytes: 1 << 20,
};

const HS_SECRET = "memory-test-hs256-secret-0123456789abcdef";

/** Sends a command and waits for its answer (a notification or an error with its id). */
async function command(
  client: TestClient,
  name: string,
  args?: Record<string, unknown>,
): Promise<Frame> {
  const id = crypto.randomUUID();
  client.send({ type: "command", name, id, ...(args ? { args } : {}) });
  return await client.waitFor((f) => f.id === id, `answer to ${name}`);
}

/** Writes a conversation into a store as a socket in it would have, then lets it go. */
async function seed(
  store: SessionStore,
  owner: string | null,
  name: string,
  exchanges: [string, string][],
): Promise<string> {
  const id = await conversationSessionId(owner, name);
  store.create(id, owner, name);
  for (const [q, a] of exchanges) {
    await store.appendHistory(id, [{ role: "user", content: q }, {
      role: "assistant",
      content: a,
    }]);
  }
  await store.flush();
  await store.release(id);
  return id;
}

async function withStack(
  fn: (stack: Stack, store: SessionStore) => Promise<void>,
  env: Record<string, string> = {},
  /** Null: the one the server opens from `env`. */
  store: SessionStore | null = new MemoryStore(limits),
) {
  const stack = await startStack(env, {}, { store: store ?? undefined });
  try {
    await fn(stack, store!);
  } finally {
    await stack.close();
  }
}

Deno.test("memory commands: announced, answered on a plain session, and bad arguments get invalid_message with issues", async () => {
  await withStack(async (stack) => {
    const { client, connected } = await TestClient.open(stack.wsUrl);
    for (const name of ["conversations", "search_memory", "clear_memory"]) {
      assert(connected.commands.includes(name), `connected lists ${name}`);
    }
    const list = await command(client, "conversations");
    assertEquals([list.type, list.event, list.conversations], [
      "notification",
      "conversations",
      [],
    ]);
    const search = await command(client, "search_memory", { query: "anything" });
    assertEquals([search.event, search.query, search.results], ["search_memory", "anything", []]);
    const cleared = await command(client, "clear_memory");
    assertEquals([cleared.event, cleared.cleared, "conversation" in cleared], [
      "memory_cleared",
      0,
      false,
    ]);
    const bad: [string, Record<string, unknown> | undefined, string][] = [
      ["search_memory", undefined, "args.query"],
      ["search_memory", { query: "" }, "args.query"],
      ["search_memory", { query: "   " }, "args.query"],
      ["search_memory", { query: 42 }, "args.query"],
      ["search_memory", { query: "x".repeat(501) }, "args.query"],
      ["search_memory", { query: "ok", limit: 0 }, "args.limit"],
      ["search_memory", { query: "ok", limit: 51 }, "args.limit"],
      ["search_memory", { query: "ok", limit: 2.5 }, "args.limit"],
      ["search_memory", { query: "ok", limit: "10" }, "args.limit"],
      ["clear_memory", { conversation: "no spaces allowed" }, "args.conversation"],
      ["clear_memory", { conversation: "" }, "args.conversation"],
      ["clear_memory", { conversation: 7 }, "args.conversation"],
    ];
    for (const [name, args, path] of bad) {
      const e = await command(client, name, args);
      assertEquals(
        [e.type, e.code, e.issues?.[0]?.path],
        ["error", "invalid_message", path],
        `${name} ${JSON.stringify(args)}`,
      );
    }
    const ok = await command(client, "search_memory", { query: "x".repeat(500), limit: 50 });
    assertEquals(ok.event, "search_memory", "500 characters and 50 results are allowed");
    await client.close();
  });
});

Deno.test("memory commands: a kept conversation is listed, searched and cleared from another socket", async () => {
  await withStack(async (stack, store) => {
    await seed(store, null, "trip", [["Which tram goes to the castle?", "Tram 28 does."]]);
    await seed(store, null, "work", [["When is the castle report due?", "On Friday."]]);
    const { client } = await TestClient.open(stack.wsUrl);
    const list = await command(client, "conversations");
    assertEquals(list.conversations.map((c: Frame) => [c.name, c.messages]), [
      ["work", 2],
      ["trip", 2],
    ]);
    const search = await command(client, "search_memory", { query: "castle tram", limit: 5 });
    assertEquals(search.results.map((r: Frame) => [r.conversation, r.role, r.content]), [
      ["trip", "user", "Which tram goes to the castle?"],
      ["work", "user", "When is the castle report due?"],
      ["trip", "assistant", "Tram 28 does."],
    ]);
    const one = await command(client, "clear_memory", { conversation: "trip" });
    assertEquals([one.conversation, one.cleared], ["trip", 1]);
    const after = await command(client, "search_memory", { query: "castle tram" });
    assertEquals(after.results.map((r: Frame) => r.conversation), ["work"]);
    const all = await command(client, "clear_memory");
    assertEquals(all.cleared, 2);
    assertEquals((await command(client, "search_memory", { query: "castle" })).results, []);
    await client.close();
  });
});

Deno.test("search_memory tool: the model searches the user's conversations", async () => {
  await withStack(async (stack, store) => {
    await seed(store, null, "trip", [["I love the yellow trams", "Noted."]]);
    const { client, connected } = await TestClient.open(stack.wsUrl);
    assert(connected.tools.some((t: Frame) => t.name === "search_memory"), "tool announced");
    stack.sim.script({
      kind: "stream",
      tokens: ["Let me look. "],
      toolCalls: [{ id: "call_m", name: "search_memory", arguments: '{"query":"trams"}' }],
    });
    const id = client.query("What did I say I love?");
    const result = await client.waitFor(
      (f) => f.type === "tool_result" && f.id === id,
      "tool_result",
    );
    assertEquals(
      result.result.results.map((r: Frame) => [r.conversation, r.content]),
      [["trip", "I love the yellow trams"]],
    );
    assertEquals((await client.terminal(id)).type, "response");
    await client.close();
  }, { TOOLS: "search_memory" });
});

Deno.test("memory commands with auth: a user sees, searches and clears only their own", async () => {
  const auth: AuthServer = await startAuthServer();
  try {
    await withStack(async (stack, store) => {
      await seed(store, "user-a", "diary", [["my secret is marmalade", "safe with me"]]);
      await seed(store, null, "diary", [["auth-off marmalade", "shared"]]);
      const connect = async (sub: string) => {
        const token = await hs256(auth, HS_SECRET, { sub });
        const client = await TestClient.connect(stack.wsUrl, [
          "agent-websocket.v1",
          `jwt-${token}`,
        ]);
        await client.waitFor((f) => f.event === "connected", "connected");
        return client;
      };
      const b = await connect("user-b");
      assertEquals((await command(b, "conversations")).conversations, []);
      assertEquals((await command(b, "search_memory", { query: "marmalade" })).results, []);
      const tried = await command(b, "clear_memory", { conversation: "diary" });
      assertEquals(tried.cleared, 0, "the same answer as for a name nobody has");
      const a = await connect("user-a");
      assertEquals(
        (await command(a, "search_memory", { query: "marmalade" })).results.map((r: Frame) =>
          r.content
        ),
        ["my secret is marmalade"],
        "a's own, untouched by b; never the auth-off namespace",
      );
      await a.close();
      await b.close();
    }, {
      AUTH_MODE: "supabase",
      SUPABASE_URL: auth.url,
      SUPABASE_JWT_SECRET: HS_SECRET,
    });
  } finally {
    await auth.close();
  }
});

Deno.test({
  name: "memory commands on Postgres: a kept conversation is listed, searched and cleared",
  ignore: !dbAvailable,
  async fn() {
    const db = await tempDatabase(true);
    const seeder = new PostgresStore({
      url: db.url,
      poolSize: 1,
      flushMs: 5,
      limits,
      instance: "seeder",
      leaseMs: 60_000,
      expiryMs: 60_000,
      log: createLogger("error", [], () => {}),
    });
    try {
      await seed(seeder, null, "garden", [["When do tulips bloom?", "In April."]]);
      await withStack(
        async (stack) => {
          const { client } = await TestClient.open(stack.wsUrl);
          const list = await command(client, "conversations");
          assertEquals(list.conversations.map((c: Frame) => [c.name, c.messages]), [["garden", 2]]);
          const hits = await command(client, "search_memory", { query: '"tulips" -bloom or' });
          assertEquals(hits.results.map((r: Frame) => r.content), ["When do tulips bloom?"]);
          assertEquals(
            (await command(client, "clear_memory", { conversation: "garden" })).cleared,
            1,
          );
          assertEquals((await command(client, "search_memory", { query: "tulips" })).results, []);
          await client.close();
        },
        { SESSION_STORE: "postgres", DATABASE_URL: db.url },
        null,
      );
    } finally {
      await seeder.close();
      await db.drop();
    }
  },
});

/** Asks a question in a conversation socket and waits for the answer to end. */
async function ask(client: TestClient, content: string): Promise<void> {
  const t = await client.terminal(client.query(content), 5000);
  assertEquals(t.type, "response", `answered: ${content}`);
}

/** Whether a frame carries a word (in any field). */
function says(f: Frame, word: string): boolean {
  return JSON.stringify(f).includes(word);
}

/** Runs a test on a server with each store: memory, and Postgres (a database of its own). */
const withEachStore: [
  string,
  boolean,
  (fn: (stack: Stack) => Promise<void>, env: Record<string, string>) => Promise<void>,
][] = [
  ["memory", false, (fn, env) => withStack(fn, env)],
  ["postgres", !dbAvailable, async (fn, env) => {
    const db = await tempDatabase(true);
    try {
      await withStack(fn, { ...env, SESSION_STORE: "postgres", DATABASE_URL: db.url }, null);
    } finally {
      await db.drop();
    }
  }],
];

for (const [storeName, ignore, withStore] of withEachStore) {
  Deno.test({
    name: `conversations (${storeName}): what is said in two joined conversations is found, ` +
      "one is cleared, then all",
    ignore,
    async fn() {
      await withStore(async (stack) => {
        const trip = await TestClient.connect(`${stack.wsUrl}?conversation=trip`);
        const work = await TestClient.connect(`${stack.wsUrl}?conversation=work`);
        await trip.waitFor((f) => f.event === "connected", "trip connected");
        await work.waitFor((f) => f.event === "connected", "work connected");
        await ask(trip, "Book the night train to Vienna");
        await ask(work, "Draft the Vienna budget");
        const list = await command(trip, "conversations");
        assertEquals(list.conversations.map((c: Frame) => [c.name, c.messages]).sort(), [
          ["trip", 2],
          ["work", 2],
        ]);
        const found = await command(work, "search_memory", { query: "vienna" });
        assertEquals(
          found.results.filter((r: Frame) => r.role === "user").map((r: Frame) => r.conversation)
            .sort(),
          ["trip", "work"],
        );
        assertEquals((await command(work, "clear_memory", { conversation: "trip" })).cleared, 1);
        const history = await command(trip, "history");
        assertEquals(history.messages, [], "the joined conversation's history is gone too");
        const left = await command(trip, "search_memory", { query: "vienna" });
        assert(left.results.every((r: Frame) => r.conversation === "work"));
        assertEquals((await command(trip, "clear_memory")).cleared, 2);
        assertEquals((await command(trip, "search_memory", { query: "vienna" })).results, []);
        // A rejoin continues the conversation where it was.
        await trip.close();
        const again = await TestClient.connect(`${stack.wsUrl}?conversation=trip`);
        await again.waitFor((f) => f.event === "connected" || f.event === "resumed", "rejoined");
        await ask(again, "And a hotel in Vienna");
        const found2 = await command(again, "search_memory", { query: "hotel" });
        assertEquals(found2.results.map((r: Frame) => r.conversation), ["trip", "trip"]);
        await again.close();
        await work.close();
      }, { RESUME_WINDOW_SECONDS: "5" });
    },
  });

  Deno.test({
    name: `conversations (${storeName}): clear_memory forgets the frames kept for resume too; ` +
      "live sockets, resumes from after the clear and other sessions go on",
    ignore,
    async fn() {
      await withStore(async (stack) => {
        const join = async (query: string) => {
          const client = await TestClient.connect(`${stack.wsUrl}?${query}`);
          const first = await client.waitFor(
            (f) => f.event === "connected" || f.event === "resumed" || f.type === "error",
            `first frame of ${query}`,
          );
          return { client, first };
        };
        const notes = (await join("conversation=notes")).client;
        const other = (await join("conversation=other")).client;
        const plain = await TestClient.open(stack.wsUrl);
        await ask(notes, "The quokka vault code is 7731");
        await ask(other, "Keep the wombat list");
        await ask(plain.client, "Note the wombat plan");
        // Before the clear a resume from 0 is sent the old answer (what the clear must stop).
        const before = await join("conversation=notes&last_seq=0");
        assertEquals(before.first.event, "resumed");
        await before.client.waitFor((f) => says(f, "quokka"), "the old answer, before the clear");
        await before.client.close();

        const cleared = await command(notes, "clear_memory", { conversation: "notes" });
        assertEquals(cleared.cleared, 1);
        const late = await join("conversation=notes&last_seq=0");
        assertEquals([late.first.type, late.first.code, late.first.seq], [
          "error",
          "resume_gap",
          0,
        ]);
        await late.client.waitFor((f) => f.event === "connected", "in the conversation again");
        await ask(late.client, "What is on the shopping list?");
        assert(!late.client.frames.some((f) => says(f, "quokka")), "no old frame comes back");
        // From the clear point on, a resume gets exactly what followed.
        const after = await join(`conversation=notes&last_seq=${cleared.seq - 1}`);
        assertEquals(after.first.event, "resumed");
        const replay = after.client.frames.slice(1, 1 + after.first.replayed);
        assertEquals(replay[0].id, cleared.id, "the first frame after the clear is its answer");
        assertEquals(replay.map((f) => f.seq), replay.map((_, i) => cleared.seq + i));
        assert(!replay.some((f) => says(f, "quokka")));
        // The socket attached through the clear goes on, its seq without a gap.
        await ask(notes, "And the bakery hours?");
        const seqs = notes.frames.filter((f) => f.seq > 0).map((f) => f.seq);
        assertEquals(seqs, seqs.map((_, i) => seqs[0] + i), "gapless");
        assert(notes.frames.some((f) => says(f, "bakery")));
        // Another conversation and a plain session keep their frames.
        const still = await join("conversation=other&last_seq=0");
        assertEquals(still.first.event, "resumed");
        await still.client.waitFor((f) => says(f, "wombat"), "the other conversation's answer");
        await plain.client.close();
        const back = await join(`session_id=${plain.connected.session_id}&last_seq=0`);
        assertEquals(back.first.event, "resumed");
        await back.client.waitFor((f) => says(f, "wombat"), "the plain session's answer");
        for (const c of [notes, other, late.client, after.client, still.client, back.client]) {
          await c.close();
        }
      }, {});
    },
  });

  Deno.test({
    name: `conversations (${storeName}): left by every socket, a conversation is kept; a rejoin ` +
      "goes on with its history and seq",
    ignore,
    async fn() {
      await withStore(async (stack) => {
        const first = await TestClient.connect(`${stack.wsUrl}?conversation=diary`);
        await first.waitFor((f) => f.event === "connected", "connected");
        await ask(first, "Today I planted tomatoes");
        const lastSeq = first.frames.at(-1)!.seq;
        await first.close();
        const again = await TestClient.connect(`${stack.wsUrl}?conversation=diary`);
        const hello = await again.waitFor((f) => f.event === "connected", "connected again");
        assert(hello.seq > lastSeq, `the seq goes on: ${hello.seq} after ${lastSeq}`);
        const history = await command(again, "history");
        assertEquals(history.messages.map((m: Frame) => m.role), ["user", "assistant"]);
        const found = await command(again, "search_memory", { query: "tomatoes" });
        assertEquals(found.results.length, 2);
        await again.close();
      }, { RESUME_WINDOW_SECONDS: "0" });
    },
  });
}

Deno.test({
  name: "conversations with auth: user B cannot list, search or clear what user A said",
  async fn() {
    const auth = await startAuthServer();
    try {
      await withStack(async (stack) => {
        const join = async (sub: string, name: string) => {
          const token = await hs256(auth, HS_SECRET, { sub });
          const client = await TestClient.connect(`${stack.wsUrl}?conversation=${name}`, [
            "agent-websocket.v1",
            `jwt-${token}`,
          ]);
          await client.waitFor((f) => f.event === "connected", "connected");
          return client;
        };
        const a = await join("user-a", "plans");
        await ask(a, "The surprise party is on Saturday");
        const b = await join("user-b", "plans");
        assertEquals((await command(b, "conversations")).conversations.map((c: Frame) => c.name), [
          "plans",
        ], "b's own conversation of the same name, not a's");
        assertEquals((await command(b, "search_memory", { query: "surprise party" })).results, []);
        assertEquals((await command(b, "clear_memory", { conversation: "plans" })).cleared, 1);
        const still = await command(a, "search_memory", { query: "surprise" });
        assertEquals(still.results.map((r: Frame) => r.role).sort(), ["assistant", "user"]);
        assertEquals((await command(a, "history")).messages.length, 2, "a's history untouched");
        await a.close();
        await b.close();
      }, {
        AUTH_MODE: "supabase",
        SUPABASE_URL: auth.url,
        SUPABASE_JWT_SECRET: HS_SECRET,
      });
    } finally {
      await auth.close();
    }
  },
});

Deno.test({
  name: "conversations on two processes: a clear made on one sticks on the one holding the " +
    "conversation (it drops its cached history), and a resume from before it on either " +
    "process gets none of its frames",
  ignore: !dbAvailable,
  async fn() {
    const db = await tempDatabase(true);
    const env = { SESSION_STORE: "postgres", DATABASE_URL: db.url, RESUME_WINDOW_SECONDS: "5" };
    const a = await startStack(env);
    const b = await startStack(env);
    try {
      const holder = await TestClient.connect(`${a.wsUrl}?conversation=notes`);
      await holder.waitFor((f) => f.event === "connected", "connected");
      await ask(holder, "alpha quokka question");
      const other = (await TestClient.open(b.wsUrl)).client;
      assertEquals((await command(other, "clear_memory", { conversation: "notes" })).cleared, 1);
      // The holder hears of it through the bus; until then its cache still has alpha.
      const end = performance.now() + 3000;
      while ((await command(holder, "history")).messages.length > 0) {
        assert(performance.now() < end, "the holder never dropped its cached history");
      }
      await ask(holder, "beta question");
      const history = await command(holder, "history");
      assertEquals(history.messages[0].content, "beta question");
      assertEquals(history.messages.length, 2);
      // A resume from 0 on the holder, and one relayed from the other process.
      const here = await TestClient.connect(`${a.wsUrl}?conversation=notes&last_seq=0`);
      const gap = await here.waitFor((f) => f.type === "error", "resume_gap on the holder");
      assertEquals(gap.code, "resume_gap");
      const there = await TestClient.connect(`${b.wsUrl}?conversation=notes&last_seq=0`);
      await there.waitFor((f) => f.event === "resumed", "resumed through the relay");
      await ask(there, "gamma question");
      await here.waitFor((f) => says(f, "gamma") && f.done === true, "the answer on the holder");
      for (const c of [here, there]) {
        assert(
          !c.frames.some((f) => says(f, "quokka")),
          `no frame from before the clear: ${
            JSON.stringify(c.frames.filter((f) => says(f, "quokka")))
          }`,
        );
        await c.close();
      }
      assertEquals((await command(other, "search_memory", { query: "alpha" })).results, []);
      await holder.close();
      await other.close();
    } finally {
      await a.close();
      await b.close();
      await db.drop();
    }
  },
});
