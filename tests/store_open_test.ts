/**
 * Choosing the session store at startup: `SESSION_STORE=auto` (the default)
 * is durable wherever the database and its schema are there, and says so in
 * one line when they are not; `postgres` refuses to start without the schema.
 */
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { DATABASE_URL, dbAvailable } from "./db.ts";
import { tempDatabase } from "./store_fixtures.ts";
import { loadConfig } from "../supabase/functions/_shared/platform/config.ts";
import { createLogger } from "../supabase/functions/_shared/platform/log.ts";
import {
  MIGRATION,
  type OpenedStore,
  openStore,
  StoreConfigError,
} from "../supabase/functions/_shared/store/open.ts";

function config(env: Record<string, string>) {
  const r = loadConfig(env);
  if (!r.ok) throw new Error(r.errors.join("; "));
  return r.config;
}

/** Opens a store from `env`; returns it with the log lines it wrote. */
async function open(env: Record<string, string>, checkTimeoutMs = 3000) {
  const lines: Record<string, string>[] = [];
  const log = createLogger("info", [], (l) => lines.push(JSON.parse(l)));
  const opened = await openStore(config(env), log, crypto.randomUUID(), { checkTimeoutMs });
  return { ...opened, lines };
}

async function closeStore(o: OpenedStore) {
  await o.store.close().catch(() => {});
}

/** A port nothing listens on. */
function deadPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("config: SESSION_STORE defaults to auto, and the database URL is kept for it", () => {
  const c = config({});
  assertEquals([c.store.mode, c.store.url], ["auto", null]);
  const withUrl = config({ SUPABASE_DB_URL: "postgres://u@db:5432/postgres" });
  assertEquals([withUrl.store.mode, withUrl.store.url], ["auto", "postgres://u@db:5432/postgres"]);
  assertEquals(withUrl.store.bufferMaxFrames, 100_000);
});

Deno.test("openStore: memory when asked, and in auto mode without a database URL", async () => {
  const asked = await open({ SESSION_STORE: "memory", DATABASE_URL });
  assertEquals([asked.store.durable, asked.bus], [false, undefined]);
  const none = await open({});
  assertEquals(none.store.durable, false);
  assertStringIncludes(none.why, "no SUPABASE_DB_URL");
  assertEquals(none.lines.map((l) => [l.level, l.event]), [["info", "session_store"]]);
});

Deno.test({
  name: "openStore: auto picks Postgres from SUPABASE_DB_URL alone when the schema is there",
  ignore: !dbAvailable,
  async fn() {
    const o = await open({ SUPABASE_DB_URL: DATABASE_URL });
    try {
      assert(o.store.durable, o.why);
      assert(o.bus, "the bus comes with the store");
      assertEquals(o.store.health().state, "ok");
      assertEquals(o.lines.map((l) => l.event), ["session_store"]);
      // It works: a frame goes in and comes back.
      const id = crypto.randomUUID();
      o.store.create(id, null);
      o.store.appendFrame(id, { seq: 1, json: '{"type":"pong","seq":1}' });
      await o.store.flush();
      const r = await o.store.framesAfter(id, 0);
      assert(r.ok && r.frames.length === 1);
      await o.store.delete(id);
    } finally {
      await closeStore(o);
    }
  },
});

Deno.test({
  name: "openStore: auto without the schema runs in memory and says once, loudly, how to fix it",
  ignore: !dbAvailable,
  async fn() {
    const db = await tempDatabase(false);
    try {
      const o = await open({ SUPABASE_DB_URL: db.url });
      assertEquals(o.store.durable, false);
      assertEquals(o.lines.length, 1);
      assertEquals([o.lines[0].level, o.lines[0].event], ["warn", "durable_sessions_off"]);
      assertStringIncludes(o.lines[0].why, "supabase db push");
      assertStringIncludes(o.lines[0].why, MIGRATION);
    } finally {
      await db.drop();
    }
  },
});

Deno.test({
  name:
    "openStore: SESSION_STORE=postgres without the schema refuses to start, naming the migration",
  ignore: !dbAvailable,
  async fn() {
    const db = await tempDatabase(false);
    try {
      let error: unknown;
      try {
        await open({ SESSION_STORE: "postgres", DATABASE_URL: db.url });
      } catch (err) {
        error = err;
      }
      assert(error instanceof StoreConfigError, `refused: ${error}`);
      assertStringIncludes(error.message, MIGRATION);
      assertStringIncludes(error.message, "supabase db push");
    } finally {
      await db.drop();
    }
  },
});

Deno.test("openStore: a database that does not answer: auto falls back to memory and says why", async () => {
  const o = await open({ SUPABASE_DB_URL: `postgres://root@127.0.0.1:${deadPort()}/none` });
  assertEquals(o.store.durable, false);
  assertEquals(o.lines.map((l) => [l.level, l.event]), [["warn", "durable_sessions_off"]]);
  assertStringIncludes(o.why, "does not answer");
});

Deno.test("openStore: SESSION_STORE=postgres with a database that does not answer yet starts, reporting it", async () => {
  const o = await open({
    SESSION_STORE: "postgres",
    DATABASE_URL: `postgres://root@127.0.0.1:${deadPort()}/none`,
  }, 1000);
  try {
    assert(o.store.durable);
    const h = o.store.health();
    assertEquals([h.state, h.reason], ["degraded", "unreachable"]);
    assertEquals(o.lines.map((l) => l.event), ["store_unavailable"]);
  } finally {
    await closeStore(o);
  }
});
