/**
 * Choosing the session store at startup. With `SESSION_STORE=auto` (the
 * default) sessions are durable wherever they can be: on hosted Supabase
 * `SUPABASE_DB_URL` is always set, so once the migration is applied
 * (`supabase db push`) nothing else needs setting. Without the schema the
 * server still starts, in memory, and says so once, loudly.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { Bus } from "./bus.ts";
import { PostgresStore } from "./postgres.ts";
import { MemoryStore, type SessionStore, type StoreLimits } from "./store.ts";

/** Where the migrations that create the schema are, named in every message about it. */
export const MIGRATION =
  "supabase/migrations/ (20261122…, 20261130…, 20261201…, 20261202…, 20261203…, 20261204…)";

/** What {@linkcode openStore} chose, and why (one sentence, also logged). */
export interface OpenedStore {
  store: SessionStore;
  /** Messages between processes; only with a store other processes share. */
  bus?: Bus;
  why: string;
}

/** Options of {@linkcode openStore}; defaults suit production. */
export interface OpenStoreOptions {
  /** How long the schema check may take before the database counts as unreachable. */
  checkTimeoutMs?: number;
}

/**
 * Thrown when `SESSION_STORE=postgres` cannot work; the message says what to do.
 *
 * @example
 * ```ts
 * import { openStore, StoreConfigError } from "./open.ts";
 * import type { Config } from "../platform/config.ts";
 * import { createLogger } from "../platform/log.ts";
 * export async function start(config: Config) {
 *   try {
 *     return await openStore(config, createLogger("info"), crypto.randomUUID());
 *   } catch (err) {
 *     if (err instanceof StoreConfigError) console.error(err.message); // names the migrations
 *     throw err;
 *   }
 * }
 * ```
 */
export class StoreConfigError extends Error {
  override name = "StoreConfigError";
}

/**
 * Opens the session store the config asks for:
 *
 * - `memory`: memory.
 * - `auto`: Postgres when SUPABASE_DB_URL (or DATABASE_URL) is set and the
 *   schema is there; memory otherwise, with one log line saying why.
 * - `postgres`: Postgres; throws {@linkcode StoreConfigError} naming the
 *   migration when the schema is missing. A database that does not answer
 *   yet is not fatal: the store starts `down` and recovers when it answers.
 *
 * @example
 * ```ts
 * import { openStore } from "./open.ts";
 * import { loadConfig } from "../platform/config.ts";
 * import { createLogger } from "../platform/log.ts";
 * const r = loadConfig({ SESSION_STORE: "memory" });
 * if (r.ok) {
 *   const { store, why } = await openStore(r.config, createLogger("warn"), crypto.randomUUID());
 *   console.log(why, store.health().state); // "SESSION_STORE is memory" "ok"
 * }
 * ```
 */
export async function openStore(
  config: Config,
  log: Logger,
  instance: string,
  opts: OpenStoreOptions = {},
): Promise<OpenedStore> {
  const limits: StoreLimits = {
    maxHistory: config.maxHistory,
    maxHistoryChars: config.maxHistoryChars,
    replayMaxFrames: config.replayMaxFrames,
    replayMaxBytes: config.replayMaxBytes,
    memoryMaxMessages: config.memoryMaxMessages,
  };
  const { mode, url } = config.store;
  const memory = (why: string, level: "info" | "warn"): OpenedStore => {
    if (level === "warn") log.warn("durable_sessions_off", { store: "memory", why });
    else log.info("session_store", { store: "memory", why });
    return { store: new MemoryStore(limits), why };
  };
  if (mode === "memory") return memory("SESSION_STORE is memory", "info");
  if (!url) {
    // loadConfig refuses SESSION_STORE=postgres without a URL, so this is auto.
    return memory(
      "durable sessions off: no SUPABASE_DB_URL or DATABASE_URL (sessions live in this process)",
      "info",
    );
  }
  // A holder is taken for dead after three missed sweeps (it renews once per sweep).
  const leaseMs = Math.max(1000, 3 * config.sweepIntervalMs);
  const store = new PostgresStore({
    url,
    poolSize: config.store.poolSize,
    flushMs: config.store.flushMs,
    buffer: { maxFrames: config.store.bufferMaxFrames, maxBytes: config.store.bufferMaxBytes },
    limits,
    instance,
    leaseMs,
    expiryMs: config.resumeWindowMs + leaseMs,
    conversationRetentionMs: config.store.conversationRetentionMs,
    log,
  });
  let problem: string | null;
  try {
    problem = await store.checkSchema(opts.checkTimeoutMs ?? 5000, mode === "postgres");
  } catch (err) {
    // With SESSION_STORE=postgres the store has logged store_unavailable and keeps trying.
    const detail = err instanceof Error ? err.message : String(err);
    if (mode === "postgres") {
      return {
        store,
        bus: store.bus,
        why: `SESSION_STORE is postgres; the database does not answer yet (${detail})`,
      };
    }
    await store.discard();
    return memory(`durable sessions off: the database does not answer (${detail})`, "warn");
  }
  if (problem) {
    await store.discard();
    const fix = `run \`supabase db push\` to apply ${MIGRATION}`;
    if (mode === "postgres") {
      throw new StoreConfigError(
        `SESSION_STORE is postgres but the database has no session schema (${problem}): ${fix}`,
      );
    }
    return memory(`durable sessions off: ${fix} (${problem})`, "warn");
  }
  const why = mode === "postgres"
    ? "SESSION_STORE is postgres and the schema is there"
    : "a database URL is set and the schema is there";
  log.info("session_store", { store: "postgres", why });
  return { store, bus: store.bus, why };
}
