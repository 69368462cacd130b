/**
 * A durable session store on Postgres (Supabase's own database), so that a
 * session outlives the isolate that opened it: another process can resume it
 * with its full history and every durable frame.
 *
 * Writes never slow the stream: frames, new sessions and open-query lists are
 * buffered and written together every `flushMs` in one transaction (no insert
 * per token). A replay merges what is durable with this process's own
 * unflushed tail, so a client resuming on the same process misses nothing.
 *
 * @module
 */
import postgres from "postgres";
import type { ChatMessage } from "../model/model.ts";
import type { Logger } from "../platform/log.ts";
import { type Bus, createPgBus } from "./bus.ts";
import {
  type ReplayResult,
  type SessionRecord,
  type SessionStore,
  type StoredFrame,
  type StoreLimits,
  trimHistory,
} from "./store.ts";

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
  log: Logger;
}

/** Sessions deleted, and old frames trimmed, per statement, so upkeep never locks for long. */
const BATCH = 500;

interface PendingFrame extends StoredFrame {
  sessionId: string;
}

/**
 * @example
 * ```ts
 * const store = new PostgresStore({
 *   url: Deno.env.get("SUPABASE_DB_URL")!, poolSize: 3, flushMs: 20, limits,
 *   instance: crypto.randomUUID(), leaseMs: 45_000, expiryMs: 165_000, log,
 * });
 * ```
 */
export class PostgresStore implements SessionStore {
  readonly durable = true;
  /** The client, shared with the notification bus (LISTEN needs the same server). */
  readonly sql: postgres.Sql;
  /** The bus between the processes sharing this database, over LISTEN/NOTIFY. */
  readonly bus: Bus;
  readonly #o: PostgresStoreOptions;
  #creates = new Map<string, string | null>();

  /** Frames wait here only until they are written; that is all the replay log it holds. */
  get memoryBytes(): number {
    let n = 0;
    for (const list of [this.#frames, this.#writing]) for (const f of list) n += f.json.length;
    return n;
  }

  #frames: PendingFrame[] = [];
  /** Frames being written right now: still visible to replays until committed. */
  #writing: PendingFrame[] = [];
  #open = new Map<string, string[]>();
  /** Waiting turns to write (null clears one), in the same transaction as the frames. */
  #suspended = new Map<string, unknown>();
  /** History of the sessions this process holds: it alone writes them, so reads stay local. */
  #history = new Map<string, ChatMessage[]>();
  /** History to write with the next batch, in the same transaction as the frames. */
  #historyWrites = new Map<string, ChatMessage[]>();
  #deletes = new Set<string>();
  #chain: Promise<void> = Promise.resolve();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  constructor(opts: PostgresStoreOptions) {
    this.#o = opts;
    this.sql = postgres(opts.url, {
      max: opts.poolSize,
      idle_timeout: 30,
      connect_timeout: 10,
      // Supabase's pooler in transaction mode does not support prepared statements.
      prepare: false,
      onnotice: () => {},
    });
    this.bus = createPgBus(this.sql);
  }

  create(id: string, owner: string | null): void {
    this.#creates.set(id, owner);
    this.#schedule();
  }

  appendFrame(id: string, frame: StoredFrame): void {
    this.#frames.push({ sessionId: id, seq: frame.seq, json: frame.json });
    this.#schedule();
  }

  setOpenQueries(id: string, ids: string[]): void {
    this.#open.set(id, ids);
    this.#schedule();
  }

  setSuspended(id: string, turn: unknown): void {
    this.#suspended.set(id, turn);
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush().catch((err) => this.#o.log.error("store_flush_failed", { err: String(err) }));
    }, this.#o.flushMs);
  }

  /** Writes everything buffered so far, in one transaction, after any write before it. */
  flush(): Promise<void> {
    const run = this.#chain.then(() => this.#write());
    this.#chain = run.catch(() => {});
    return run;
  }

  async #write(): Promise<void> {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const creates = this.#creates;
    const open = this.#open;
    const suspended = this.#suspended;
    const histories = this.#historyWrites;
    const deletes = this.#deletes;
    const frames = this.#frames.filter((f) => !deletes.has(f.sessionId));
    if (
      creates.size + frames.length + open.size + suspended.size + histories.size + deletes.size ===
        0
    ) return;
    this.#creates = new Map();
    this.#suspended = new Map();
    this.#historyWrites = new Map();
    this.#open = new Map();
    this.#deletes = new Set();
    this.#frames = [];
    this.#writing = frames;
    const expires = new Date(Date.now() + this.#o.expiryMs);
    try {
      await this.sql.begin(async (tx) => {
        const newIds = [...creates.keys()].filter((id) => !deletes.has(id));
        if (newIds.length > 0) {
          await tx`
            insert into agent_websocket.sessions (id, owner, instance, expires_at)
            select id, owner, ${this.#o.instance}, ${expires}
            from unnest(${newIds}::text[], ${newIds.map((id) => creates.get(id) ?? null)}::text[])
              as t(id, owner)
            on conflict (id) do nothing`;
        }
        if (frames.length > 0) {
          // Fenced: a process that lost a session (another claimed it while this one
          // looked dead) must not write into its sequence any more.
          await tx`
            insert into agent_websocket.frames (session_id, seq, frame)
            select v.id, v.seq, v.frame from unnest(
              ${frames.map((f) => f.sessionId)}::text[],
              ${frames.map((f) => f.seq)}::bigint[],
              ${frames.map((f) => f.json)}::text[]) as v(id, seq, frame)
            join agent_websocket.sessions s on s.id = v.id and s.instance = ${this.#o.instance}
            on conflict do nothing`;
          const last = new Map<string, number>();
          for (const f of frames) {
            last.set(f.sessionId, Math.max(last.get(f.sessionId) ?? 0, f.seq));
          }
          await tx`
            update agent_websocket.sessions s
            set last_seq = greatest(s.last_seq, v.seq), updated_at = now()
            from unnest(${[...last.keys()]}::text[], ${[...last.values()]}::bigint[]) as v(id, seq)
            where s.id = v.id and s.instance = ${this.#o.instance}`;
        }
        for (const [id, history] of histories) {
          if (deletes.has(id)) continue;
          await tx`
            update agent_websocket.sessions
            set history = ${tx.json(history as never)}, updated_at = now()
            where id = ${id} and instance = ${this.#o.instance}`;
        }
        for (const [id, ids] of open) {
          if (deletes.has(id)) continue;
          await tx`
            update agent_websocket.sessions set open_queries = ${ids}::text[]
            where id = ${id} and instance = ${this.#o.instance}`;
        }
        for (const [id, turn] of suspended) {
          if (deletes.has(id)) continue;
          await tx`
            update agent_websocket.sessions
            set suspended = ${turn === null ? null : tx.json(turn as never)}
            where id = ${id} and instance = ${this.#o.instance}`;
        }
        if (deletes.size > 0) {
          await tx`delete from agent_websocket.sessions where id = any(${[...deletes]}::text[])`;
        }
      });
    } catch (err) {
      // Put everything back in front of what came since, so order is kept for the retry.
      for (const [id, owner] of creates) if (!this.#creates.has(id)) this.#creates.set(id, owner);
      for (const [id, ids] of open) if (!this.#open.has(id)) this.#open.set(id, ids);
      for (const [id, t] of suspended) if (!this.#suspended.has(id)) this.#suspended.set(id, t);
      for (const [id, h] of histories) {
        if (!this.#historyWrites.has(id)) this.#historyWrites.set(id, h);
      }
      for (const id of deletes) this.#deletes.add(id);
      this.#frames = [...frames, ...this.#frames];
      this.#schedule();
      throw err;
    } finally {
      this.#writing = [];
    }
  }

  #local(id: string, after: number): StoredFrame[] {
    const out: StoredFrame[] = [];
    for (const list of [this.#writing, this.#frames]) {
      for (const f of list) {
        if (f.sessionId === id && f.seq > after) out.push({ seq: f.seq, json: f.json });
      }
    }
    return out;
  }

  async framesAfter(id: string, seq: number): Promise<ReplayResult> {
    // Local frames first: a write that commits while we query moves them to the table.
    const local = this.#local(id, seq);
    const rows = await this.sql<{ seq: string; frame: string }[]>`
      select seq, frame from agent_websocket.frames
      where session_id = ${id} and seq > ${seq}
      order by seq
      limit ${this.#o.limits.replayMaxFrames + 1}`;
    const bySeq = new Map<number, StoredFrame>();
    for (const r of rows) bySeq.set(Number(r.seq), { seq: Number(r.seq), json: r.frame });
    for (const f of [...local, ...this.#local(id, seq)]) bySeq.set(f.seq, f);
    const frames = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    if (frames.length > 0 && frames[0].seq > seq + 1) {
      return { ok: false, oldestSeq: frames[0].seq };
    }
    return { ok: true, frames };
  }

  async history(id: string): Promise<ChatMessage[]> {
    const cached = this.#history.get(id);
    if (cached) return [...cached];
    const [row] = await this.sql<{ history: ChatMessage[] }[]>`
      select history from agent_websocket.sessions where id = ${id}`;
    const history = row?.history ?? [];
    this.#history.set(id, history);
    return [...history];
  }

  /**
   * Updates the local copy at once and writes it with the next batch, in the
   * same transaction as the frames that carry the answer: both land, or neither.
   */
  async appendHistory(id: string, messages: ChatMessage[]): Promise<void> {
    const kept = trimHistory(
      [...(await this.history(id)), ...messages],
      this.#o.limits.maxHistory,
      this.#o.limits.maxHistoryChars,
    );
    this.#history.set(id, kept);
    this.#historyWrites.set(id, kept);
    this.#schedule();
  }

  clearHistory(id: string): Promise<void> {
    this.#history.set(id, []);
    this.#historyWrites.set(id, []);
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
  }): SessionRecord {
    return {
      id: row.id,
      owner: row.owner,
      lastSeq: Number(row.last_seq),
      openQueries: row.open_queries,
      instance: row.instance,
      instanceAlive: row.alive,
      suspended: row.suspended ?? null,
    };
  }

  async load(id: string): Promise<SessionRecord | null> {
    const [row] = await this.sql`
      select id, owner, last_seq, open_queries, instance, suspended,
        heartbeat_at > now() - ${this.#o.leaseMs} * interval '1 millisecond' as alive
      from agent_websocket.sessions
      where id = ${id} and expires_at > now()`;
    return row ? this.#record(row as never) : null;
  }

  async claim(id: string): Promise<SessionRecord | null> {
    await this.flush();
    // Another process held it: what it wrote is the truth now.
    this.#history.delete(id);
    const [row] = await this.sql`
      update agent_websocket.sessions
      set instance = ${this.#o.instance}, heartbeat_at = now(),
        expires_at = ${new Date(Date.now() + this.#o.expiryMs)}
      where id = ${id} and expires_at > now()
      returning id, owner, last_seq, open_queries, instance, suspended, true as alive`;
    return row ? this.#record(row as never) : null;
  }

  async release(id: string): Promise<void> {
    await this.flush();
    this.#history.delete(id);
    await this.sql`
      update agent_websocket.sessions set instance = null
      where id = ${id} and instance = ${this.#o.instance}`;
  }

  async delete(id: string): Promise<void> {
    this.#creates.delete(id);
    this.#open.delete(id);
    this.#suspended.delete(id);
    this.#history.delete(id);
    this.#historyWrites.delete(id);
    this.#frames = this.#frames.filter((f) => f.sessionId !== id);
    this.#deletes.add(id);
    await this.flush();
  }

  async maintain(): Promise<void> {
    const { instance, expiryMs, limits } = this.#o;
    await this.sql`
      update agent_websocket.sessions
      set heartbeat_at = now(), expires_at = ${new Date(Date.now() + expiryMs)}
      where instance = ${instance}`;
    await this.sql`
      delete from agent_websocket.sessions
      where id in (
        select id from agent_websocket.sessions where expires_at < now() limit ${BATCH})`;
    await this.sql`
      delete from agent_websocket.frames
      where ctid in (
        select f.ctid from agent_websocket.frames f
        join agent_websocket.sessions s on s.id = f.session_id
        where f.seq <= s.last_seq - ${limits.replayMaxFrames}
        limit ${BATCH * 10})`;
  }

  async close(): Promise<void> {
    this.#closed = true;
    try {
      await this.flush();
      await this.sql`
        update agent_websocket.sessions set instance = null where instance = ${this.#o.instance}`;
    } finally {
      await this.sql.end({ timeout: 2 });
    }
  }
}
