/**
 * Fixtures for the durable-store fault tests: a throwaway database (with or
 * without the schema), a Postgres store whose log lines are kept, and the
 * bad network in front of Postgres (tests/tcp_proxy.ts).
 *
 * @module
 */
import postgres from "postgres";
import { DATABASE_URL } from "./db.ts";
import {
  PostgresStore,
  type PostgresStoreOptions,
} from "../supabase/functions/_shared/store/postgres.ts";
import { createLogger } from "../supabase/functions/_shared/platform/log.ts";
import { startTcpProxy, type TcpProxy } from "./tcp_proxy.ts";

const MIGRATIONS = new URL("../supabase/migrations/", import.meta.url);

/** Applies every migration to a database, in order, as `supabase db push` would. */
export async function migrate(url: string): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const files = [...Deno.readDirSync(MIGRATIONS)].map((e) => e.name)
      .filter((n) => n.endsWith(".sql")).sort();
    for (const name of files) {
      await sql.unsafe(await Deno.readTextFile(new URL(name, MIGRATIONS)));
    }
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** A database of its own for one test, dropped afterwards. */
export interface TempDatabase {
  url: string;
  /** A client on it, for the test's own checks and for dropping the schema. */
  sql: postgres.Sql;
  drop(): Promise<void>;
}

/** Creates an empty database next to DATABASE_URL's (with the schema when `withSchema`). */
export async function tempDatabase(withSchema: boolean): Promise<TempDatabase> {
  const name = `aw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const u = new URL(DATABASE_URL);
  u.pathname = `/${name}`;
  const url = u.toString();
  if (withSchema) await migrate(url);
  const sql = postgres(url, { max: 2, onnotice: () => {} });
  return {
    url,
    sql,
    async drop() {
      await sql.end({ timeout: 1 });
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end({ timeout: 1 });
    },
  };
}

/** The URL of `url`'s database reached through a proxy on loopback. */
export function viaProxy(url: string, proxy: TcpProxy): string {
  const u = new URL(url);
  u.hostname = "127.0.0.1";
  u.port = String(proxy.port);
  return u.toString();
}

/** Starts a proxy in front of the Postgres server of `url`. */
export function proxyFor(url: string): TcpProxy {
  return startTcpProxy(Number(new URL(url).port || 5432));
}

/** A store plus every log line it wrote, parsed. */
export interface LoggedStore {
  store: PostgresStore;
  // deno-lint-ignore no-explicit-any
  lines: Record<string, any>[];
  /** Log lines with this event. */
  events(event: string): Record<string, unknown>[];
}

/** A Postgres store with short timers for tests; `opts` overrides them. */
export function loggedStore(url: string, opts: Partial<PostgresStoreOptions> = {}): LoggedStore {
  const lines: Record<string, unknown>[] = [];
  const store = new PostgresStore({
    url,
    poolSize: 2,
    flushMs: 5,
    limits: {
      maxHistory: 50,
      maxHistoryChars: 100_000,
      replayMaxFrames: 5000,
      replayMaxBytes: 1 << 20,
    },
    instance: crypto.randomUUID(),
    leaseMs: 60_000,
    expiryMs: 600_000,
    log: createLogger("debug", [], (line) => lines.push(JSON.parse(line))),
    queryTimeoutMs: 2000,
    retryBaseMs: 20,
    retryMaxMs: 200,
    degradedAfterMs: 100,
    downAfterMs: 500,
    ...opts,
  });
  return { store, lines, events: (event) => lines.filter((l) => l.event === event) };
}

/** Polls until `check` holds (async allowed), or fails after `ms`. */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  ms = 5000,
): Promise<void> {
  const end = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The seqs of a session that are durable, in order. */
export async function durableSeqs(sql: postgres.Sql, session: string): Promise<number[]> {
  const rows = await sql<{ seq: string }[]>`
    select seq from agent_websocket.frames where session_id = ${session} order by seq`;
  return rows.map((r) => Number(r.seq));
}
