/**
 * Per-user limits across processes, through Postgres: each process adds what
 * its users spent (tokens and credits per UTC day) and how many queries it let
 * through (per UTC minute) to shared counters, and reads back the totals of
 * the users it serves — one upsert per table per sync, never one per query or
 * token. Admission stays synchronous: it reads the totals this process holds,
 * at most one sync interval old, plus its own counts since.
 *
 * When the database cannot be reached, each process goes on with what it
 * knows (its own counts and the last totals it read) and sends its counts once
 * it can again.
 *
 * @module
 */
import type postgres from "postgres";
import type { Logger } from "../platform/log.ts";
import type { UserLimits } from "../platform/limits.ts";
import type { DailyBudget } from "../platform/budget.ts";
import type { CountRow, SharedCounts } from "../platform/shared_counts.ts";

/** What {@linkcode PostgresQuota} needs. */
export interface PostgresQuotaOptions {
  /** The store's client (store/postgres.ts); closed by the store, after {@linkcode PostgresQuota.close}. */
  sql: postgres.Sql;
  limits: UserLimits;
  /** Null when no daily budget is set: only the query rate is shared. */
  budget: DailyBudget | null;
  /** How often counts are sent and totals read, while any user is active here. */
  intervalMs: number;
  log: Logger;
}

/** What the runtime asks of the shared counts. */
export interface Quota {
  /**
   * Reads `user`'s totals now if this process does not follow them yet, so
   * their first query here is judged by what they spent elsewhere. Resolves
   * once read, or after a short wait when the database is slow.
   */
  prime(user: string): Promise<void>;
  /** Sends what was counted and reads the totals; resolves when done. */
  sync(): Promise<void>;
  /** Stops syncing after one last send. */
  close(): Promise<void>;
}

/** A user not seen for this long (and with no session here) is no longer followed. */
const IDLE_MS = 60_000;
/** How long a new connection waits for its user's totals at most. */
const PRIME_WAIT_MS = 1000;
/** How often old rows are deleted, by each process. */
const CLEANUP_EVERY_MS = 60_000;
/** Rows deleted per statement, so the cleanup never locks for long. */
const BATCH = 5000;
/** Days of usage kept, enough for a monthly bill. */
const USAGE_KEEP_DAYS = 31;

/**
 * @example
 * ```ts ignore
 * const quota = new PostgresQuota({ sql: store.sql, limits, budget, intervalMs: 1000, log });
 * await quota.prime("user-1"); // on connect
 * budget.check("user-1"); // synchronous, at admission
 * await quota.close(); // before store.close()
 * ```
 */
export class PostgresQuota implements Quota {
  readonly #o: PostgresQuotaOptions;
  readonly #rate: SharedCounts;
  readonly #timer: ReturnType<typeof setInterval>;
  #chain: Promise<void> = Promise.resolve();
  /** A round asked for and not started yet: later callers share it. */
  #queued: Promise<void> | null = null;
  #failing = false;
  #lastCleanup = 0;
  #closed = false;

  constructor(opts: PostgresQuotaOptions) {
    this.#o = opts;
    this.#rate = opts.limits.shareRate();
    opts.budget?.share();
    this.#timer = setInterval(() => {
      // A round still running (a slow database) is not stacked upon.
      if (this.#queued === null) this.sync().catch(() => {});
    }, opts.intervalMs);
    if (typeof Deno.unrefTimer === "function") Deno.unrefTimer(this.#timer);
  }

  prime(user: string): Promise<void> {
    const budget = this.#o.budget?.counts;
    if (this.#rate.has(user) && (!budget || budget.has(user))) {
      this.#rate.touch(user);
      budget?.touch(user);
      return Promise.resolve();
    }
    this.#rate.touch(user);
    budget?.touch(user);
    let timer: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      this.sync(),
      new Promise<void>((resolve) => timer = setTimeout(resolve, PRIME_WAIT_MS)),
    ]).finally(() => clearTimeout(timer));
  }

  sync(): Promise<void> {
    if (this.#queued) return this.#queued;
    const run = this.#chain.then(() => {
      this.#queued = null;
      return this.#round();
    });
    this.#queued = run;
    this.#chain = run.catch(() => {});
    return run;
  }

  async #round(): Promise<void> {
    const { budget, limits, sql } = this.#o;
    const held = (key: string) => limits.sessions(key) > 0;
    budget?.prune(IDLE_MS, held);
    limits.pruneShared(IDLE_MS, held);
    const spent = budget?.counts.takePending() ?? [];
    const queries = this.#rate.takePending();
    try {
      const today = budget?.today() ?? "";
      const users = budget?.counts.keys() ?? [];
      if (spent.length + users.length > 0) {
        const rows = await sql<{ user_key: string; day: string; tokens: string; cost: string }[]>`
          with sent as (
            insert into agent_websocket.usage as u (user_key, day, tokens, cost)
            select * from unnest(
              ${spent.map((r) => r.key)}::text[], ${spent.map((r) => r.period)}::date[],
              ${spent.map((r) => r.values[0])}::bigint[], ${
          spent.map((r) => r.values[1])
        }::numeric[])
            on conflict (user_key, day) do update
              set tokens = u.tokens + excluded.tokens, cost = u.cost + excluded.cost,
                updated_at = now()
            returning u.user_key, u.day, u.tokens, u.cost
          )
          select user_key, to_char(day, 'YYYY-MM-DD') as day, tokens::text, cost::text from sent
          union all
          select u.user_key, to_char(u.day, 'YYYY-MM-DD'), u.tokens::text, u.cost::text
          from agent_websocket.usage u
          where u.day = ${today}::date and u.user_key = any(${users}::text[])
            and not exists (select 1 from sent s where s.user_key = u.user_key and s.day = u.day)`;
        budget!.counts.settle(
          spent,
          rows.map((r) => ({
            key: r.user_key,
            period: r.day,
            values: [Number(r.tokens), Number(r.cost)],
          })),
        );
      }
      const minute = Math.floor(Date.now() / 60_000);
      const keys = this.#rate.keys();
      if (queries.length + keys.length > 0) {
        const rows = await sql<{ user_key: string; minute: string; queries: number }[]>`
          with sent as (
            insert into agent_websocket.rate as r (user_key, minute, queries)
            select * from unnest(
              ${queries.map((r) => r.key)}::text[], ${queries.map((r) => r.period)}::bigint[],
              ${queries.map((r) => r.values[0])}::int[])
            on conflict (user_key, minute) do update set queries = r.queries + excluded.queries
            returning r.user_key, r.minute, r.queries
          )
          select user_key, minute::text, queries from sent
          union all
          select r.user_key, r.minute::text, r.queries from agent_websocket.rate r
          where r.minute >= ${minute - 1} and r.user_key = any(${keys}::text[])
            and not exists (select 1 from sent s where s.user_key = r.user_key and s.minute = r.minute)`;
        this.#rate.settle(
          queries,
          rows.map((r) => ({ key: r.user_key, period: r.minute, values: [r.queries] })),
        );
      }
      if (this.#failing) this.#o.log.info("quota_sync_recovered", {});
      this.#failing = false;
    } catch (err) {
      restore(budget?.counts, spent);
      restore(this.#rate, queries);
      // One line when it starts failing, not one per interval.
      if (!this.#failing) this.#o.log.warn("quota_sync_failed", { err: String(err) });
      this.#failing = true;
      throw err;
    }
    await this.#cleanup();
  }

  async #cleanup(): Promise<void> {
    const now = Date.now();
    if (now - this.#lastCleanup < CLEANUP_EVERY_MS) return;
    this.#lastCleanup = now;
    const minute = Math.floor(now / 60_000);
    try {
      await this.#o.sql`
      delete from agent_websocket.rate where ctid in (
        select ctid from agent_websocket.rate where minute < ${minute - 2} limit ${BATCH})`;
      await this.#o.sql`
      delete from agent_websocket.usage where ctid in (
        select ctid from agent_websocket.usage
        where day < current_date - ${USAGE_KEEP_DAYS}::int limit ${BATCH})`;
    } catch (err) {
      this.#o.log.warn("quota_cleanup_failed", { err: String(err) });
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    await this.sync().catch(() => {});
  }
}

function restore(counts: SharedCounts | undefined, rows: CountRow[]): void {
  if (rows.length > 0) counts?.restore(rows);
}
