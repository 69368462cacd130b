/**
 * A durable session store on Postgres (Supabase's own database), so that a
 * session outlives the isolate that opened it: another process can resume it
 * with its full history and every durable frame.
 *
 * Writes never slow the stream: frames, new sessions, histories and
 * open-query lists wait in a bounded buffer and are written together every
 * `flushMs`, one statement per kind (no insert per token, no transaction held
 * open across round trips). A replay merges what is durable with this
 * process's own unwritten tail, so a client resuming on the same process
 * misses nothing.
 *
 * The database may flap. A failed write stays buffered and is retried with
 * backoff (full jitter); the state (`ok` → `degraded` → `down`, and back) is
 * logged once per change and reported by {@linkcode PostgresStore.health}.
 * A batch the database refuses because of its data (U+0000 in text, a bad
 * JSON escape, a row too big) is split until the offending rows are found;
 * they are dropped with one log line and everything else is written, so one
 * bad string never stops the store for other sessions.
 *
 * @module
 */
import type postgres from "postgres";
import type { ChatMessage } from "../model/model.ts";
import type { ConversationSummary, MemoryHit } from "../protocol/wire.ts";
import type { Logger } from "../platform/log.ts";
import { fullJitterDelay } from "../platform/backoff.ts";
import { type Bus, createPgBus, REFERENCE_TTL_SECONDS } from "./bus.ts";
import { classifyPgError, createPgClient, describePgError } from "./pg_client.ts";
import {
  type ReplayResult,
  type SessionRecord,
  type SessionStore,
  type StoredFrame,
  StoreError,
  type StoreHealth,
  type StoreLimits,
  type StoreState,
  trimHistory,
} from "./store.ts";
import { WriteBuffer, type WriteBufferLimits, type WriteOp } from "./write_buffer.ts";
import {
  DEFAULT_CONVERSATION_RETENTION_DAYS,
  DEFAULT_MEMORY_MAX_MESSAGES,
  memorable,
  searchTerms,
} from "./memory.ts";
import {
  clearConversations,
  clearThrough,
  expireMessages,
  expiresAt,
  insertMessages,
  isoMicros,
  listConversations,
  releasedExpiry,
  searchMessages,
  trimMessages,
} from "./memory_sql.ts";

/** What {@linkcode PostgresStore} needs. */
export interface PostgresStoreOptions {
  url: string;
  poolSize: number;
  /** How long frames may wait before they are written. */
  flushMs: number;
  limits: StoreLimits;
  /** This process's id, recorded as the holder of its sessions. */
  instance: string;
  /** A holder that has not said it is alive for this long is taken for dead. */
  leaseMs: number;
  /** A session nobody holds is deleted this long after its last sign of life. */
  expiryMs: number;
  /** The same for a named conversation (default 30 days). */
  conversationRetentionMs?: number;
  log: Logger;
  /** Bounds of what waits to be written while the database is away. */
  buffer?: WriteBufferLimits;
  /** One statement taking longer than this is failed and the client replaced (default 10 s). */
  queryTimeoutMs?: number;
  /** Backoff of write retries: first ceiling and cap (defaults 100 ms, 5 s). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Writes failing for this long make the state `degraded` (default 1 s). */
  degradedAfterMs?: number;
  /** Writes failing for this long make it `down` (default 10 s). */
  downAfterMs?: number;
  /** Most frames per statement (default 2000). */
  batchFrames?: number;
}

/** Defaults of the write buffer: generous for an outage of tens of seconds, small next to an isolate's memory. */
export const DEFAULT_BUFFER: WriteBufferLimits = { maxFrames: 100_000, maxBytes: 16 << 20 };

/** Sessions deleted, and old frames trimmed, per statement, so upkeep never locks for long. */
const BATCH = 500;

/**
 * Conversations trimmed to the memory cap per statement: each costs an index
 * range up to the cap, so a statement stays short.
 */
const TRIM_SESSIONS = 20;

/** How long close() may spend writing what is left before it gives up. */
const CLOSE_TIMEOUT_MS = 3000;

/** Refused rows are logged at most this often; the lines in between are counted. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/** Postgres text cannot hold U+0000, and JSONB no lone surrogate: replace both with U+FFFD. */
function storable(s: string): string {
  return (s.includes("\0") ? s.replaceAll("\0", "\uFFFD") : s).toWellFormed();
}

/** A JSON replacer applying {@linkcode storable} to every string value. */
const storableJson = (_key: string, value: unknown) =>
  typeof value === "string" ? storable(value) : value;

/** Whether an id can be in the database at all (a client may send anything). */
function possibleId(id: string): boolean {
  return !id.includes("\0") && id.isWellFormed();
}

/** Splits a batch for isolation: by session while it spans several, else in halves. */
function split(ops: WriteOp[]): [WriteOp[], WriteOp[]] {
  const sessions = [...new Set(ops.map((op) => op.session))];
  if (sessions.length > 1) {
    const left = new Set(sessions.slice(0, Math.ceil(sessions.length / 2)));
    return [ops.filter((op) => left.has(op.session)), ops.filter((op) => !left.has(op.session))];
  }
  const mid = Math.ceil(ops.length / 2);
  return [ops.slice(0, mid), ops.slice(mid)];
}

class TimeoutError extends Error {
  readonly code = "STORE_TIMEOUT";
}

/**
 * @example
 * ```ts
 * import { PostgresStore } from "./postgres.ts";
 * import { createLogger } from "../platform/log.ts";
 * export function open(url: string) {
 *   const limits = {
 *     maxHistory: 50, maxHistoryChars: 200_000, replayMaxFrames: 5000, replayMaxBytes: 1 << 20,
 *   };
 *   return new PostgresStore({
 *     url, poolSize: 3, flushMs: 20, limits, log: createLogger("info"),
 *     instance: crypto.randomUUID(), leaseMs: 45_000, expiryMs: 165_000,
 *   });
 * }
 * ```
 */
export class PostgresStore implements SessionStore {
  readonly durable = true;
  /** Messages between processes, on this store's client (LISTEN needs the same server). */
  readonly bus: Bus;
  onLost?: (sessionId: string) => void;
  onCommitted?: (frames: { session: string; seq: number; json: string }[]) => void;
  /** Callers waiting for a frame to become durable, per session, in seq order. */
  readonly #durableWaiters = new Map<string, { seq: number; resolve(sent: boolean): void }[]>();
  readonly #o: PostgresStoreOptions & {
    queryTimeoutMs: number;
    retryBaseMs: number;
    retryMaxMs: number;
    degradedAfterMs: number;
    downAfterMs: number;
    batchFrames: number;
    conversationRetentionMs: number;
  };
  #sql: postgres.Sql;
  #replacedAt = 0;
  #onReplaced: (() => void)[] = [];
  readonly #buf: WriteBuffer;
  /** Ops being written right now: their frames stay visible to replays until committed. */
  #writing: WriteOp[] = [];
  /** History of the sessions this process holds: it alone writes them, so reads stay local. */
  #history = new Map<string, ChatMessage[]>();
  /** Names of the conversations among the sessions this process created, loaded or claimed. */
  #conversations = new Map<string, string>();
  /** Conversations written to from here since the last upkeep: only they may have grown past the cap. */
  #memoryWritten = new Set<string>();
  /**
   * At most this many messages are stored of a conversation held here (counted
   * at an upkeep, plus what was written since): one known under the cap is not
   * read again. Absent: not known (another process may have written to it).
   */
  #memoryStored = new Map<string, number>();
  /** The last time given to a message said here (µs): strictly increasing. */
  #saidUs = 0;
  #chain: Promise<void> = Promise.resolve();
  /** The upkeep pass queued or running, if any. */
  #upkeep: Promise<void> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Whether the pending flush timer is the immediate one. */
  #urgent = false;
  /** How many times each session held here had been claimed when this process claimed it. */
  #claims = new Map<string, number>();
  #closed = false;

  #state: StoreState = "ok";
  #reason: StoreHealth["reason"];
  #lastError: string | undefined;
  #since = new Date();
  #failingSince: number | null = null;
  #attempt = 0;
  /** Frames dropped from a full buffer since the outage began (said once, then counted). */
  #droppedInOutage = 0;
  #refusedLoggedAt = 0;
  #refusedUnlogged = 0;
  /** The database's reason for the last refused row, for the next refusal line. */
  #lastRefusal = "";

  constructor(opts: PostgresStoreOptions) {
    this.#o = {
      queryTimeoutMs: 10_000,
      retryBaseMs: 100,
      retryMaxMs: 5_000,
      degradedAfterMs: 1_000,
      downAfterMs: 10_000,
      batchFrames: 2000,
      conversationRetentionMs: DEFAULT_CONVERSATION_RETENTION_DAYS * 86_400_000,
      ...opts,
    };
    this.#buf = new WriteBuffer(opts.buffer ?? DEFAULT_BUFFER);
    this.#sql = this.#connect();
    const current = () => this.#sql;
    this.bus = createPgBus({
      get sql() {
        return current();
      },
      onReplaced: (fn) => this.#onReplaced.push(fn),
    });
  }

  /** The current client (replaced when one hangs). */
  get sql(): postgres.Sql {
    return this.#sql;
  }

  #connect(): postgres.Sql {
    return createPgClient(this.#o.url, {
      max: this.#o.poolSize,
      connectTimeoutMs: Math.min(10_000, this.#o.queryTimeoutMs),
      // The query that waits for this connection only times out later; say it now.
      onConnectFailure: (err) => {
        if (this.#closed) return;
        this.#failed(err);
        this.#schedule();
      },
    });
  }

  /** Frames wait here only until they are written: that is all the replay log it holds. */
  get memoryBytes(): number {
    return this.#buf.bytes;
  }

  health(): StoreHealth {
    return {
      state: this.#state,
      ...(this.#reason ? { reason: this.#reason } : {}),
      ...(this.#lastError ? { lastError: this.#lastError } : {}),
      since: this.#since.toISOString(),
      pendingFrames: this.#buf.frames + this.#writing.filter((op) => op.kind === "frame").length,
      pendingBytes: this.#buf.bytes,
      droppedFrames: this.#buf.dropped,
    };
  }

  setAttached(id: string, attached: boolean): void {
    this.#buf.setAttached(id, attached);
  }

  create(id: string, owner: string | null, conversation: string | null = null): void {
    // A new session has no history: its first question needs no read (nor a database).
    this.#history.set(id, []);
    if (conversation !== null) this.#conversations.set(id, conversation);
    // Its row starts at claim 0: a release names it like any claim.
    this.#claims.set(id, 0);
    this.#buf.create(id, owner, conversation);
    this.#schedule();
  }

  appendFrame(id: string, frame: StoredFrame, open?: string[]): void {
    const dropped = this.#buf.frame({ session: id, seq: frame.seq, json: frame.json, open });
    if (dropped > 0) this.#noteDropped(dropped);
    // A frame someone waits on to be durable is written now, not at the next tick.
    this.#schedule(open !== undefined);
  }

  whenDurable(id: string, seq: number): Promise<boolean> {
    // Down: waiting would hold the answer for as long as the outage lasts. Closed: the
    // process is going; a frame it could not write must not be seen.
    if (this.#closed) return Promise.resolve(false);
    if (this.#state === "down") return Promise.resolve(true);
    return new Promise((resolve) => {
      let list = this.#durableWaiters.get(id);
      if (!list) this.#durableWaiters.set(id, list = []);
      list.push({ seq, resolve });
    });
  }

  /**
   * Lets waiters of a session go, up to a seq (all of them without one):
   * `sent` true when the frames may be sent, false when they never will be
   * written (the session was let go here).
   */
  #settleWaiters(id: string, upTo = Infinity, sent = true): void {
    const list = this.#durableWaiters.get(id);
    if (!list) return;
    while (list.length > 0 && list[0].seq <= upTo) list.shift()!.resolve(sent);
    if (list.length === 0) this.#durableWaiters.delete(id);
  }

  setSuspended(id: string, turn: unknown): void {
    this.#buf.suspended(id, turn);
    this.#schedule();
  }

  setOpenQueries(id: string, ids: string[]): void {
    this.#buf.open(id, ids);
    this.#schedule();
  }

  // --- memory (SQL in memory_sql.ts) ----------------------------------------

  async conversations(owner: string | null): Promise<ConversationSummary[]> {
    if (owner !== null && !possibleId(owner)) return [];
    await this.#readOwnWrites();
    return await this.#query((sql) => listConversations(sql, owner));
  }

  async searchMemory(owner: string | null, query: string, limit: number): Promise<MemoryHit[]> {
    const terms = searchTerms(storable(query));
    if (terms.length === 0 || (owner !== null && !possibleId(owner))) return [];
    await this.#readOwnWrites();
    return await this.#query((sql) => searchMessages(sql, owner, terms, limit));
  }

  /** What was just said here is found at once (a failed write is reported by the read). */
  async #readOwnWrites(): Promise<void> {
    if (!this.#buf.empty) await this.flush().catch(() => {});
  }

  /** After this process's pending writes, so none of them lands after the clear. */
  clearMemory(owner: string | null, conversation?: string): Promise<string[]> {
    if (owner !== null && !possibleId(owner)) return Promise.resolve([]);
    return this.#serial(async () => {
      const ids = await this.#query((sql) => clearConversations(sql, owner, conversation));
      this.#forgetMemory(ids);
      // Sent from here and not yet written (an answer streaming from the old history).
      const pending = this.#pendingOfHeld(ids).filter((p) => p.upTo > 0);
      if (pending.length > 0) {
        await this.#query((sql) => clearThrough(sql, this.#o.instance, pending));
      }
      return ids;
    });
  }

  /**
   * Drops what this process holds of cleared conversations (told by the one
   * that cleared them): the cached history is read again, and what waited to
   * be written of them is not written. What it sent of them until now may
   * carry that cache (an answer, a `history`), so the clear is extended over
   * it: a resume from before this point gets none of it. Frames waiting to
   * be written are still written (the sockets attached now wait for them)
   * but never replayed, and deleted by the next upkeep.
   */
  forgetHistory(sessionIds: string[]): Promise<void> {
    return this.#serial(async () => {
      this.#forgetMemory(sessionIds);
      const held = this.#pendingOfHeld(sessionIds);
      if (held.length > 0) await this.#query((sql) => clearThrough(sql, this.#o.instance, held));
    });
  }

  /**
   * The sessions among these held here, each with the last seq waiting to be
   * written (0: none). Asked within the chain, where no write of this process
   * runs: what waits in the buffer is all that is not written.
   */
  #pendingOfHeld(ids: string[]): { id: string; upTo: number }[] {
    return ids.filter((id) => this.#claims.has(id) && possibleId(id))
      .map((id) => ({ id, upTo: this.#buf.pendingAfter(id, 0).at(-1)?.seq ?? 0 }));
  }

  /** A held session's new expiry: the retention for a conversation, else the resume window. */
  #expiresAt(sql: postgres.Sql) {
    return expiresAt(sql, this.#o.expiryMs, this.#o.conversationRetentionMs);
  }

  #forgetMemory(ids: string[]): void {
    for (const id of ids) {
      if (this.#history.has(id)) this.#history.set(id, []);
      this.#buf.forgetMemory(id);
    }
  }

  /** Queues what was said in a conversation for search, with the next batch. */
  #remember(id: string, messages: ChatMessage[]): void {
    if (!this.#conversations.has(id)) return;
    const now = Date.now() * 1000;
    this.#buf.memory(
      id,
      memorable(messages).map((m) => ({
        id: crypto.randomUUID(),
        role: m.role,
        content: storable(m.content),
        at: isoMicros(this.#saidUs = Math.max(now, this.#saidUs + 1)),
      })),
    );
  }

  /**
   * Drops the oldest messages past the cap of the conversations written to
   * since the last upkeep, unless known to be under it; a few per statement.
   * One still over after a statement (its excess was above the batch) is
   * read again at the next upkeep.
   */
  async #trimMemory(): Promise<void> {
    const cap = this.#o.limits.memoryMaxMessages ?? DEFAULT_MEMORY_MAX_MESSAGES;
    const due = [...this.#memoryWritten].filter((id) =>
      (this.#memoryStored.get(id) ?? Infinity) > cap
    );
    this.#memoryWritten.clear();
    for (let i = 0; i < due.length; i += TRIM_SESSIONS) {
      let counted: { id: string; n: number }[];
      try {
        counted = await this.#query((sql) =>
          trimMessages(sql, due.slice(i, i + TRIM_SESSIONS), cap, BATCH * 10)
        );
      } catch (err) {
        for (const id of due.slice(i)) this.#memoryWritten.add(id);
        throw err;
      }
      for (const { id, n } of counted) {
        if (!this.#conversations.has(id)) continue;
        if (n <= cap) this.#memoryStored.set(id, n);
        else {
          this.#memoryStored.delete(id);
          this.#memoryWritten.add(id);
        }
      }
    }
  }

  // --- writing ---------------------------------------------------------------

  #schedule(urgent = false): void {
    if (this.#closed) return;
    if (this.#timer !== undefined) {
      if (!urgent || this.#attempt > 0 || this.#urgent) return;
      clearTimeout(this.#timer);
    }
    this.#urgent = urgent && this.#attempt === 0;
    const delay = this.#urgent
      ? 0
      : this.#attempt === 0
      ? this.#o.flushMs
      : fullJitterDelay(this.#attempt - 1, this.#o.retryBaseMs, this.#o.retryMaxMs);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#urgent = false;
      this.#run(Infinity).catch(() => {});
    }, delay);
  }

  /**
   * Writes what is buffered now, after any write before it. Rejects with a
   * {@linkcode StoreError} when the database cannot take it; nothing is lost
   * then: it stays buffered and is retried in the background.
   */
  flush(): Promise<void> {
    return this.#run(Math.ceil(this.#buf.frames / this.#o.batchFrames) + 1);
  }

  #run(rounds: number): Promise<void> {
    return this.#serial(() => this.#drain(rounds));
  }

  /** Runs `fn` after every write and upkeep before it. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn);
    this.#chain = run.then(() => {}, () => {});
    return run;
  }

  async #drain(rounds: number): Promise<void> {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    try {
      for (let round = 0; round < rounds && !this.#buf.empty; round++) {
        const ops = this.#buf.take(this.#o.batchFrames);
        const refused: WriteOp[] = [];
        try {
          await this.#commit(ops, refused);
        } catch (err) {
          const dropped = this.#buf.restore(ops.filter((op) => !refused.includes(op)));
          if (dropped > 0) this.#noteDropped(dropped);
          this.#noteRefused(refused);
          this.#failed(err);
          throw this.#storeError(err);
        }
        this.#noteRefused(refused);
        this.#succeeded();
      }
      // Nothing to write, but the last attempt failed: find out when the database is back.
      if (this.#buf.empty && this.#state !== "ok") {
        try {
          await this.#timed(this.#sql`select 1 from agent_websocket.frames limit 0`);
        } catch (err) {
          this.#failed(err);
          throw this.#storeError(err);
        }
        this.#succeeded();
      }
    } finally {
      if (!this.#buf.empty || this.#state !== "ok") this.#schedule();
    }
  }

  /**
   * Writes a batch; rows the database refuses for their data are isolated
   * (the batch is split until they are alone), left out and put in `refused`.
   * Throws on any other failure; the caller puts back what was not refused.
   */
  async #commit(ops: WriteOp[], refused: WriteOp[]): Promise<void> {
    // Postgres would store a lone surrogate as U+FFFD, so the replay would not be the
    // frame that was sent: refuse it here rather than let it change.
    const good = ops.filter((op) => {
      if (op.kind !== "frame" || op.json.isWellFormed()) return true;
      refused.push(op);
      return false;
    });
    this.#writing = good;
    const written: WriteOp[] = [];
    try {
      await this.#isolate(good, refused, written);
    } finally {
      this.#writing = [];
    }
    // Refused frames will never be durable either: nobody should wait for them.
    const upTo = new Map<string, number>();
    for (const op of [...written, ...refused]) {
      if (op.kind === "frame") upTo.set(op.session, Math.max(upTo.get(op.session) ?? 0, op.seq));
    }
    for (const [id, seq] of upTo) this.#settleWaiters(id, seq);
    if (written.length > 0 && this.onCommitted) {
      const frames = written.flatMap((op) =>
        op.kind === "frame" ? [{ session: op.session, seq: op.seq, json: op.json }] : []
      );
      if (frames.length > 0) this.onCommitted(frames);
    }
  }

  async #isolate(ops: WriteOp[], refused: WriteOp[], written: WriteOp[]): Promise<void> {
    if (ops.length === 0) return;
    try {
      written.push(...await this.#apply(ops));
    } catch (err) {
      if (classifyPgError(err) !== "data") throw err;
      if (ops.length === 1) {
        refused.push(ops[0]);
        this.#lastRefusal = describePgError(err);
        return;
      }
      const [a, b] = split(ops);
      await this.#isolate(a, refused, written);
      await this.#isolate(b, refused, written);
    }
  }

  /**
   * Applies ops in a few statements; each is atomic on its own.
   * Returns the ops written (those of sessions another process took are not).
   */
  async #apply(ops: WriteOp[]): Promise<WriteOp[]> {
    const { instance, expiryMs, conversationRetentionMs } = this.#o;
    const creates: { session: string; owner: string | null; conversation: string | null }[] = [];
    const memory: Extract<WriteOp, { kind: "memory" }>[] = [];
    const frames: { session: string; seq: number; json: string }[] = [];
    const deletes: string[] = [];
    const updates = new Map<
      string,
      {
        id: string;
        last_seq?: number;
        history?: ChatMessage[];
        open_queries?: string[];
        /** Set (to a turn, or null to clear) only when the batch changes it. */
        set_suspended?: boolean;
        suspended?: unknown;
      }
    >();
    const update = (id: string) => {
      let u = updates.get(id);
      if (!u) updates.set(id, u = { id });
      return u;
    };
    for (const op of ops) {
      if (op.kind === "create") creates.push(op);
      else if (op.kind === "frame") {
        frames.push(op);
        const u = update(op.session);
        u.last_seq = Math.max(u.last_seq ?? 0, op.seq);
        if (op.open) u.open_queries = op.open;
      } else if (op.kind === "history") update(op.session).history = op.history;
      else if (op.kind === "open") update(op.session).open_queries = op.ids;
      else if (op.kind === "suspended") {
        const u = update(op.session);
        u.set_suspended = true;
        u.suspended = op.turn;
      } else if (op.kind === "memory") memory.push(op);
      else deletes.push(op.session);
    }
    const sql = this.#sql;
    if (creates.length > 0) {
      await this.#timed(sql`
        insert into agent_websocket.sessions (id, owner, conversation, instance, expires_at)
        select id, owner, conversation, ${instance}, expires_at
        from unnest(
          ${creates.map((c) => c.session)}::text[],
          ${creates.map((c) => (c.owner === null ? null : storable(c.owner)))}::text[],
          ${creates.map((c) => c.conversation)}::text[],
          ${
        creates.map((c) =>
          new Date(Date.now() + (c.conversation ? conversationRetentionMs : expiryMs)).toISOString()
        )
      }::timestamptz[]
        ) as t(id, owner, conversation, expires_at)
        on conflict (id) do nothing`);
    }
    if (updates.size > 0) {
      // One statement: frames and the session rows they belong to land together.
      // Fenced: a process that lost a session (another claimed it while this one
      // looked dead) must not write into its sequence any more. Rows are locked in
      // id order, like every other statement here that changes several sessions:
      // a statement cut off from its client keeps running on the server, and the
      // retry must wait for it, not deadlock with it.
      const written = await this.#timed(sql<{ id: string }[]>`
        with v as (
          select * from jsonb_to_recordset(
            ${JSON.stringify([...updates.values()], storableJson)}::text::jsonb
          ) as v(
            id text, last_seq bigint, history jsonb, open_queries text[],
            set_suspended boolean, suspended jsonb)
        ), held as (
          select s.id from agent_websocket.sessions s
          where s.id in (select id from v) and s.instance = ${instance}
          order by s.id
          for no key update
        ), f as (
          insert into agent_websocket.frames (session_id, seq, frame)
          select u.id, u.seq, u.frame from unnest(
            ${frames.map((f) => f.session)}::text[],
            ${frames.map((f) => f.seq)}::bigint[],
            ${frames.map((f) => f.json)}::text[]) as u(id, seq, frame)
          where u.id in (select id from held)
          on conflict do nothing
        )
        update agent_websocket.sessions s set
          last_seq = greatest(s.last_seq, coalesce(v.last_seq, 0)),
          history = coalesce(v.history, s.history),
          open_queries = coalesce(v.open_queries, s.open_queries),
          suspended = case when v.set_suspended then v.suspended else s.suspended end,
          updated_at = now()
        from v join held on held.id = v.id
        where s.id = v.id
        returning s.id`);
      if (written.length < updates.size) {
        const held = new Set(written.map((r) => r.id));
        for (const id of updates.keys()) if (!held.has(id)) this.#lost(id);
        ops = ops.filter((op) =>
          op.kind === "create" || op.kind === "delete" || held.has(op.session)
        );
      }
    }
    if (deletes.length > 0) {
      await this.#timed(sql`
        delete from agent_websocket.sessions where id in (
          select id from agent_websocket.sessions where id = any(${deletes}::text[])
          order by id for update)`);
    }
    // Last: a retry after a failure above writes each message once (by its id) anyway.
    if (memory.length > 0) {
      await this.#timed(insertMessages(sql, instance, memory));
      for (const { session, messages } of memory) {
        if (!this.#conversations.has(session)) continue;
        this.#memoryWritten.add(session);
        const stored = this.#memoryStored.get(session);
        if (stored !== undefined) this.#memoryStored.set(session, stored + messages.length);
      }
    }
    return ops;
  }

  disown(id: string): void {
    this.#lost(id);
  }

  /**
   * Another process claimed the session (or it expired and was deleted) while
   * this one still wrote to it: nothing more of it will be written from here.
   */
  #lost(id: string): void {
    this.#history.delete(id);
    this.#claims.delete(id);
    this.#conversations.delete(id);
    this.#memoryStored.delete(id);
    this.#buf.discard(id);
    this.#settleWaiters(id, Infinity, false);
    this.#o.log.info("store_session_lost", { session: id });
    this.onLost?.(id);
  }

  /** Fails a statement that takes too long, and replaces a client that hangs. */
  async #timed<T>(query: Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new TimeoutError(`no answer from the database in ${this.#o.queryTimeoutMs} ms`));
        this.#replaceClient();
      }, this.#o.queryTimeoutMs);
    });
    try {
      return await Promise.race([query, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A connection that stops answering (a network path that drops packets
   * without a reset) would otherwise hold its queries until TCP keepalive
   * gives up, minutes later. A new client starts clean; the old one is ended.
   */
  #replaceClient(): void {
    if (this.#closed || Date.now() - this.#replacedAt < this.#o.queryTimeoutMs) return;
    this.#replacedAt = Date.now();
    const old = this.#sql;
    this.#sql = this.#connect();
    old.end({ timeout: 0 }).catch(() => {});
    this.#o.log.debug("store_client_replaced", { reason: "query_timeout" });
    for (const fn of this.#onReplaced) fn();
  }

  // --- state -----------------------------------------------------------------

  #setState(state: StoreState, reason: StoreHealth["reason"]): boolean {
    if (state === this.#state && reason === this.#reason) return false;
    this.#state = state;
    this.#reason = reason;
    this.#since = new Date();
    return true;
  }

  /**
   * Records a failure. A blip (a connection cut, and the retry works) is no
   * outage: the state turns `degraded` once writes have failed at least twice
   * in a row for `degradedAfterMs` (at once when `blip` is false), `down`
   * after `downAfterMs`, and `down` at once for a missing schema.
   */
  #failed(err: unknown, blip = true): void {
    const reason = classifyPgError(err) === "schema" ? "schema_missing" : "unreachable";
    this.#lastError = describePgError(err);
    this.#attempt++;
    const now = Date.now();
    this.#failingSince ??= now;
    if (
      blip && reason === "unreachable" && this.#state === "ok" &&
      (this.#attempt < 2 || now - this.#failingSince < this.#o.degradedAfterMs)
    ) return;
    const state = reason === "schema_missing" || now - this.#failingSince >= this.#o.downAfterMs
      ? "down"
      : "degraded";
    if (!this.#setState(state, reason)) return;
    if (state === "down") {
      for (const id of [...this.#durableWaiters.keys()]) this.#settleWaiters(id);
    }
    const fields = {
      state,
      reason,
      err: this.#lastError,
      pending_frames: this.#buf.frames,
      ...(reason === "schema_missing"
        ? { hint: "durable sessions need the migration: run `supabase db push`" }
        : {}),
    };
    if (state === "down") this.#o.log.error("store_unavailable", fields);
    else this.#o.log.warn("store_unavailable", fields);
  }

  #succeeded(): void {
    this.#attempt = 0;
    const since = this.#failingSince;
    this.#failingSince = null;
    const changed = this.#setState("ok", undefined);
    // A full buffer without an outage (a slow database) also ends here, once drained.
    if (!changed && (this.#droppedInOutage === 0 || this.#buf.frames > 0)) return;
    this.#o.log.info("store_recovered", {
      after_ms: since === null ? 0 : Date.now() - since,
      dropped_frames: this.#droppedInOutage,
    });
    this.#droppedInOutage = 0;
  }

  #noteDropped(n: number): void {
    if (this.#droppedInOutage === 0) {
      this.#o.log.warn("store_buffer_full", {
        dropped_frames: n,
        max_frames: this.#buf.limits.maxFrames,
        max_bytes: this.#buf.limits.maxBytes,
        message: "the database is away and the write buffer is full: dropping the oldest " +
          "frames of detached sessions first, then the oldest of all",
      });
    }
    this.#droppedInOutage += n;
  }

  #noteRefused(refused: WriteOp[]): void {
    if (refused.length === 0) return;
    for (const op of refused) if (op.kind === "frame") this.#buf.lose(op.session, op.seq);
    const now = Date.now();
    if (now - this.#refusedLoggedAt < REFUSAL_LOG_INTERVAL_MS) {
      this.#refusedUnlogged += refused.length;
      return;
    }
    this.#o.log.warn("store_rows_refused", {
      rows: refused.length + this.#refusedUnlogged,
      frames: refused.filter((op) => op.kind === "frame").length,
      sessions: [...new Set(refused.map((op) => op.session))].slice(0, 5),
      err: this.#lastRefusal || "frame is not well-formed UTF-16 (lone surrogate)",
      message: "rows the database cannot store were dropped; everything else was written",
    });
    this.#refusedLoggedAt = now;
    this.#refusedUnlogged = 0;
    this.#lastRefusal = "";
  }

  #storeError(err: unknown): StoreError {
    if (err instanceof StoreError) return err;
    const schema = classifyPgError(err) === "schema";
    return new StoreError(
      schema
        ? "The session store's schema is missing: run `supabase db push`"
        : `The session store is unavailable: ${describePgError(err)}`,
      schema ? "schema_missing" : err instanceof TimeoutError ? "timeout" : "unreachable",
      !schema,
      { cause: err },
    );
  }

  /** Runs a read (or a write outside the batch); failures become {@linkcode StoreError}s. */
  async #query<T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
    if (this.#reason === "schema_missing") {
      throw new StoreError(
        "The session store's schema is missing: run `supabase db push`",
        "schema_missing",
        false,
      );
    }
    try {
      return await this.#timed(fn(this.#sql));
    } catch (err) {
      if (classifyPgError(err) === "data") throw err;
      this.#failed(err);
      this.#schedule();
      throw this.#storeError(err);
    }
  }

  /**
   * What is wrong with the schema, or null when every table and column this
   * version uses is there; the caller says it. Throws a {@linkcode StoreError}
   * when the database does not answer within `timeoutMs`; with `report`, the
   * store then starts `down`, logs it, and keeps trying.
   */
  async checkSchema(timeoutMs = this.#o.queryTimeoutMs, report = true): Promise<string | null> {
    const sql = this.#sql;
    const check = async () => {
      const [row] = await sql<Record<string, boolean>[]>`
        select to_regclass('agent_websocket.sessions') is not null as sessions,
          to_regclass('agent_websocket.frames') is not null as frames,
          to_regclass('agent_websocket.messages') is not null as messages,
          to_regclass('agent_websocket.bus_payloads') is not null as bus_payloads`;
      const missing = Object.entries(row).filter(([, found]) => !found).map(([t]) => t);
      if (missing.length > 0) {
        // Named, so an older schema says which migration it lacks.
        throw Object.assign(
          new Error(`missing tables: ${missing.map((t) => `agent_websocket.${t}`).join(", ")}`),
          { code: "42P01" },
        );
      }
      // Every column this version reads or writes: an older schema fails here.
      await sql`
        select id, owner, last_seq, history, open_queries, instance, heartbeat_at,
          expires_at, updated_at, suspended, conversation, claims, cleared_seq
        from agent_websocket.sessions limit 0`;
      await sql`select session_id, seq, frame from agent_websocket.frames limit 0`;
      await sql`
        select id, session_id, owner, conversation, role, content, created_at, search
        from agent_websocket.messages limit 0`;
      await sql`select id, payload, created_at from agent_websocket.bus_payloads limit 0`;
    };
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        check(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new TimeoutError(`no answer from the database in ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
    } catch (err) {
      if (classifyPgError(err) === "schema") return describePgError(err);
      if (report) {
        // Not a blip: the database did not answer a fresh client at all.
        this.#failed(err, false);
        this.#schedule();
      }
      throw this.#storeError(err);
    } finally {
      clearTimeout(timer);
    }
    return null;
  }

  /**
   * Ends the client without writing anything: for a store that was opened
   * and is not going to be used (its schema is missing).
   */
  async discard(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    await this.#sql.end({ timeout: 0 });
  }

  // --- reading ---------------------------------------------------------------

  /**
   * This process's unwritten frames of a session after a seq, in order — only
   * while it holds the session. One it let go of has written them first; one
   * found taken by another never will, including the batch being written
   * when it found out, and a replay must not serve them.
   */
  #local(id: string, after: number): StoredFrame[] {
    if (!this.#claims.has(id)) return [];
    const out: StoredFrame[] = [];
    for (const op of this.#writing) {
      if (op.kind === "frame" && op.session === id && op.seq > after) {
        out.push({ seq: op.seq, json: op.json });
      }
    }
    for (const f of this.#buf.pendingAfter(id, after)) out.push({ seq: f.seq, json: f.json });
    return out;
  }

  async framesAfter(id: string, seq: number): Promise<ReplayResult> {
    if (!possibleId(id)) return { ok: true, frames: [] };
    const limit = this.#o.limits.replayMaxFrames + 1;
    // Local frames first: a write that commits while we query moves them to the table.
    const local = this.#local(id, seq);
    let rows: { cleared: string; seq: string | null; frame: string | null }[];
    try {
      // One row with no frame when there is none; none when there is no session.
      rows = await this.#query((sql) =>
        sql<{ cleared: string; seq: string | null; frame: string | null }[]>`
          select s.cleared_seq as cleared, f.seq, f.frame
          from agent_websocket.sessions s
          left join lateral (
            select seq, frame from agent_websocket.frames
            where session_id = s.id and seq > greatest(${seq}, s.cleared_seq)
            order by seq
            limit ${limit}) f on true
          where s.id = ${id}`
      );
    } catch (err) {
      // The database is away, but what this process still holds may be all the client needs.
      const held = this.#local(id, seq);
      if (held.length > 0 && held[0].seq === seq + 1) {
        return this.#complete(id, seq, held, null, 0);
      }
      throw err;
    }
    // Up to the clear nothing is read: not even a frame this process wrote as it cleared.
    const cleared = rows.length > 0 ? Number(rows[0].cleared) : 0;
    const bySeq = new Map<number, StoredFrame>();
    const found = rows.filter((r) => r.seq !== null);
    for (const r of found) bySeq.set(Number(r.seq), { seq: Number(r.seq), json: r.frame! });
    // Past the row limit the table has more; the next call reads on from there.
    const cut = found.length === limit ? Number(found[found.length - 1].seq) : Infinity;
    for (const f of [...local, ...this.#local(id, seq)]) {
      if (f.seq <= cut && f.seq > cleared) bySeq.set(f.seq, f);
    }
    const frames = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    return await this.#complete(id, seq, frames, this.#sql, cleared);
  }

  /**
   * The frames after `seq` when they follow on without a hole, or the truth
   * about the first one missing: cleared with the conversation (up to
   * `cleared`), trimmed by the bounded log, or never stored.
   */
  async #complete(
    id: string,
    seq: number,
    frames: StoredFrame[],
    sql: postgres.Sql | null,
    cleared: number,
  ): Promise<ReplayResult> {
    let missing = seq + 1;
    let i = 0;
    while (i < frames.length && frames[i].seq === missing) {
      i++;
      missing++;
    }
    const lost = this.#buf.firstLost(id, seq);
    const hole = i < frames.length || lost === missing;
    if (!hole && missing > cleared) return { ok: true, frames };
    const [info] = sql
      ? await this.#query((q) =>
        q<{ oldest: string | null; last: string | null }[]>`
          select (
              select min(seq) from agent_websocket.frames
              where session_id = ${id} and seq > ${cleared}
            ) as oldest,
            (select last_seq from agent_websocket.sessions where id = ${id}) as last`
      )
      : [{ oldest: null, last: null }];
    const oldest = info.oldest === null ? (frames[0]?.seq ?? 0) : Number(info.oldest);
    if (missing <= cleared) {
      return {
        ok: false,
        reason: "cleared",
        missingSeq: missing,
        oldestSeq: oldest,
        clearedSeq: cleared,
      };
    }
    const last = info.last === null ? 0 : Number(info.last);
    const trimmed = lost !== missing && missing < oldest &&
      missing <= last - this.#o.limits.replayMaxFrames;
    return {
      ok: false,
      reason: trimmed ? "trimmed" : "lost",
      missingSeq: missing,
      oldestSeq: oldest,
    };
  }

  async history(id: string): Promise<ChatMessage[]> {
    const cached = this.#history.get(id);
    if (cached) return [...cached];
    if (!possibleId(id)) return [];
    const [row] = await this.#query((sql) =>
      sql<{ history: ChatMessage[] }[]>`
        select history from agent_websocket.sessions where id = ${id}`
    );
    const history = row?.history ?? [];
    this.#history.set(id, history);
    return [...history];
  }

  /**
   * Updates the local copy at once and writes it with the next batch, in the
   * same statement as the frames that carry the answer: both land, or neither.
   */
  async appendHistory(id: string, messages: ChatMessage[]): Promise<void> {
    const kept = trimHistory(
      [...(await this.history(id)), ...messages],
      this.#o.limits.maxHistory,
      this.#o.limits.maxHistoryChars,
    );
    this.#history.set(id, kept);
    this.#buf.history(id, kept);
    this.#remember(id, messages);
    this.#schedule();
  }

  clearHistory(id: string): Promise<void> {
    this.#history.set(id, []);
    this.#buf.history(id, []);
    this.#schedule();
    return Promise.resolve();
  }

  #record(row: {
    id: string;
    owner: string | null;
    last_seq: string;
    open_queries: string[];
    instance: string | null;
    alive: boolean;
    suspended: unknown;
    conversation?: string | null;
  }): SessionRecord {
    if (row.conversation) this.#conversations.set(row.id, row.conversation);
    return {
      id: row.id,
      owner: row.owner,
      lastSeq: Number(row.last_seq),
      openQueries: row.open_queries,
      instance: row.instance,
      instanceAlive: row.alive,
      suspended: row.suspended ?? null,
      conversation: row.conversation ?? null,
    };
  }

  async load(id: string): Promise<SessionRecord | null> {
    if (!possibleId(id)) return null;
    const [row] = await this.#query((sql) =>
      sql`
        select id, owner, last_seq, open_queries, instance, suspended, conversation,
          heartbeat_at > now() - ${this.#o.leaseMs} * interval '1 millisecond' as alive
        from agent_websocket.sessions
        where id = ${id} and expires_at > now()`
    );
    return row ? this.#record(row as never) : null;
  }

  async claim(id: string, from?: string | null): Promise<SessionRecord | null> {
    if (!possibleId(id)) return null;
    await this.flush();
    // Another process held it: what it wrote is the truth now.
    this.#history.delete(id);
    this.#memoryStored.delete(id);
    const [row] = await this.#query((sql) =>
      sql`
        update agent_websocket.sessions
        set instance = ${this.#o.instance}, heartbeat_at = now(), claims = claims + 1,
          expires_at = ${this.#expiresAt(sql)}
        where id = ${id} and expires_at > now()
          and (${from === undefined} or instance is null or instance = ${from ?? null})
        returning id, owner, last_seq, open_queries, instance, suspended, conversation, claims,
          true as alive`
    );
    if (row) this.#claims.set(id, Number(row.claims));
    return row ? this.#record(row as never) : null;
  }

  async createHeld(id: string, owner: string | null, conversation: string): Promise<boolean> {
    if (!possibleId(id)) return false;
    const rows = await this.#query((sql) =>
      sql`
        insert into agent_websocket.sessions (id, owner, conversation, instance, expires_at)
        values (${id}, ${owner === null ? null : storable(owner)}, ${conversation},
          ${this.#o.instance}, ${new Date(Date.now() + this.#o.conversationRetentionMs)})
        on conflict (id) do nothing
        returning id`
    );
    if (rows.length === 0) return false;
    this.#history.set(id, []);
    this.#conversations.set(id, conversation);
    this.#claims.set(id, 0);
    return true;
  }

  async release(id: string): Promise<void> {
    // Which hold this lets go of: a release held up (the database was away, the queue
    // was long) must not undo a later claim of the same session by this same process.
    const claim = this.#claims.get(id);
    this.#claims.delete(id);
    await this.flush().finally(() => this.#settleWaiters(id, Infinity, false));
    this.#history.delete(id);
    this.#conversations.delete(id);
    this.#memoryStored.delete(id);
    this.#buf.forget(id);
    // No claim: not held here (another process took it, and this one found out), so
    // there is nothing to let go — and writing would null a claim made since.
    if (claim === undefined) return;
    await this.#query((sql) =>
      sql`
        update agent_websocket.sessions
        set instance = null, expires_at = ${releasedExpiry(sql, this.#o.conversationRetentionMs)}
        where id = ${id} and instance = ${this.#o.instance} and claims = ${claim}`
    );
  }

  /** Forgets the session here at once; its deletion is written now, or retried with the rest. */
  async delete(id: string): Promise<void> {
    this.#history.delete(id);
    this.#claims.delete(id);
    this.#conversations.delete(id);
    this.#memoryStored.delete(id);
    this.#buf.delete(id);
    this.#settleWaiters(id, Infinity, false);
    await this.flush().catch(() => {});
  }

  /**
   * Renews this process's sessions, deletes expired ones and trims the
   * conversations written to since the last pass to the memory cap. Never
   * throws: while the database is away it does nothing (the writer reports
   * the state and finds out when it is back).
   */
  maintain(): Promise<void> {
    if (this.#state !== "ok" || this.#closed) return Promise.resolve();
    // One pass at a time: calls while one waits share it instead of queueing up.
    this.#upkeep ??= this.#serial(() => this.#maintain()).catch(() => {
      // Reported through the state already.
    }).finally(() => this.#upkeep = undefined);
    return this.#upkeep;
  }

  /**
   * Every statement touches a bounded number of rows through an index, so
   * upkeep stays quick however much has piled up: frames of expired sessions
   * go first, a batch at a time, then the sessions left without frames.
   */
  async #maintain(): Promise<void> {
    const { instance, limits } = this.#o;
    await this.#query((sql) =>
      sql`
        update agent_websocket.sessions
        set heartbeat_at = now(), expires_at = ${this.#expiresAt(sql)}
        where id in (
          select id from agent_websocket.sessions where instance = ${instance}
          order by id for no key update)`
    );
    await this.#query((sql) =>
      sql`
        delete from agent_websocket.frames
        where ctid in (
          select f.ctid from agent_websocket.sessions s
          join agent_websocket.frames f on f.session_id = s.id
          where s.expires_at < now()
          limit ${BATCH * 10})`
    );
    await this.#query((sql) => expireMessages(sql, BATCH * 10));
    await this.#trimMemory();
    await this.#query((sql) =>
      sql`
        delete from agent_websocket.sessions
        where id in (
          select s.id from agent_websocket.sessions s
          where s.expires_at < now()
            and not exists (select 1 from agent_websocket.frames f where f.session_id = s.id)
            and not exists (select 1 from agent_websocket.messages m where m.session_id = s.id)
          order by s.id limit ${BATCH} for update skip locked)`
    );
    await this.#query((sql) =>
      sql`
        delete from agent_websocket.bus_payloads
        where id in (
          select id from agent_websocket.bus_payloads
          where created_at < now() - ${REFERENCE_TTL_SECONDS} * interval '1 second'
          order by created_at limit ${BATCH * 10})`
    );
    // Each process trims the sessions it holds (an index range per session, not a
    // scan of every frame); the others' are trimmed by their holders or expire. Frames
    // up to a clear go too: one written here while the clear waited for the lock
    // outlived it (never read, but it holds what was said).
    await this.#query((sql) =>
      sql`
        delete from agent_websocket.frames
        where ctid in (
          select f.ctid from agent_websocket.sessions s
          join agent_websocket.frames f
            on f.session_id = s.id
              and f.seq <= greatest(s.last_seq - ${limits.replayMaxFrames}, s.cleared_seq)
          where s.instance = ${instance}
          limit ${BATCH * 10})`
    );
  }

  /** Writes what is buffered and lets go of this process's sessions, within a few seconds. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        (async () => {
          await this.flush();
          await this.#serial(() =>
            this.#query((sql) =>
              sql`
                update agent_websocket.sessions
                set instance = null, expires_at = ${
                releasedExpiry(sql, this.#o.conversationRetentionMs)
              }
                where id in (
                  select id from agent_websocket.sessions where instance = ${this.#o.instance}
                  order by id for no key update)`
            )
          );
        })(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new StoreError("closing the store timed out", "timeout", true)),
            CLOSE_TIMEOUT_MS,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
      // What is still unwritten never will be: none of it may be sent.
      for (const id of [...this.#durableWaiters.keys()]) this.#settleWaiters(id, Infinity, false);
      await this.#sql.end({ timeout: 1 });
    }
  }
}
