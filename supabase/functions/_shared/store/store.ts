/**
 * The session store: a session's conversation history and the log of frames
 * it emitted (for replay on resume). Behind an interface so that a durable
 * store (Postgres) can replace the in-memory one without touching the handler.
 *
 * @module
 */
import type { ChatMessage } from "../model/model.ts";
import type { ConversationSummary, MemoryHit } from "../protocol/wire.ts";
import type { Bus } from "./bus.ts";

/** One emitted frame, already serialised: it is sent and replayed byte for byte. */
export interface StoredFrame {
  seq: number;
  json: string;
}

/** Bounds on what one session may keep. */
export interface StoreLimits {
  /** Most history messages kept (the system prompt is not stored). */
  maxHistory: number;
  /** Most characters of history kept; the oldest messages go first. */
  maxHistoryChars: number;
  /** Most frames kept for replay. */
  replayMaxFrames: number;
  /** Most bytes of frames kept for replay. */
  replayMaxBytes: number;
}

/** What {@linkcode SessionStore.framesAfter} finds. */
export type ReplayResult =
  /** Every frame after the asked seq, in order and without a hole (possibly none yet). */
  | { ok: true; frames: StoredFrame[] }
  /** A frame after the asked seq is gone: a replay would leave a hole. */
  | ReplayGap;

/** Why a replay cannot be complete, told truthfully. */
export interface ReplayGap {
  ok: false;
  /**
   * `trimmed`: older than what the bounded replay log keeps. `lost`: never
   * stored (its process died before writing it, or it was dropped while the
   * database was away or because the database refused it).
   */
  reason: "trimmed" | "lost";
  /** The first seq after the asked one that is gone. */
  missingSeq: number;
  /** The oldest seq still kept (0 when none is). */
  oldestSeq: number;
}

/** How the store is doing, for `/health`. */
export type StoreState = "ok" | "degraded" | "down";

/** What {@linkcode SessionStore.health} reports. */
export interface StoreHealth {
  /**
   * `ok`: writes succeed. `degraded`: writes are failing and being retried;
   * frames wait in a bounded buffer. `down`: failing for a while, or the
   * schema is missing (nothing will succeed until `supabase db push`).
   */
  state: StoreState;
  /** Why it is not ok. */
  reason?: "unreachable" | "schema_missing";
  /** The last error, without query text or parameters. */
  lastError?: string;
  /** When `state` last changed (ISO 8601). */
  since: string;
  /** Frames not yet durable. */
  pendingFrames: number;
  /** Characters of those frames. */
  pendingBytes: number;
  /** Frames given up since start: pushed out of a full buffer, or refused by the database. */
  droppedFrames: number;
}

/**
 * A store operation that failed. `retryable` is false when trying again
 * cannot help until someone acts (the schema is missing).
 *
 * @example
 * ```ts
 * import { type SessionStore, StoreError } from "./store.ts";
 * export async function read(store: SessionStore, id: string) {
 *   try {
 *     return await store.history(id);
 *   } catch (err) {
 *     if (err instanceof StoreError && !err.retryable) console.log("run supabase db push");
 *     throw err;
 *   }
 * }
 * ```
 */
export class StoreError extends Error {
  constructor(
    message: string,
    readonly reason: "unreachable" | "schema_missing" | "timeout",
    readonly retryable: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "StoreError";
  }
}

/** What a durable store knows of a session, for another process to take it over. */
export interface SessionRecord {
  id: string;
  /** The user that owns it; null when auth was off. */
  owner: string | null;
  /** The highest seq that is durable. */
  lastSeq: number;
  /** Queries accepted and not yet ended when the record was last written. */
  openQueries: string[];
  /** The process holding it, and whether that process said it was alive recently. */
  instance: string | null;
  instanceAlive: boolean;
  /** A turn that was waiting for an approval or a client's tool result (turn/checkpoint.ts). */
  suspended: unknown;
  /** The conversation's name when the session is a named conversation; null for a plain session. */
  conversation: string | null;
}

/**
 * Storage for one or many sessions. Methods that a durable store must do I/O
 * for return promises; `appendFrame`, `create` and `setOpenQueries` do not,
 * because they run on the streaming path and a durable store batches them
 * (in order) into its next flush.
 */
export interface SessionStore {
  /** Whether sessions outlive this process, so another one can resume them. */
  readonly durable: boolean;
  /** Messages between the processes that share this store; absent when there are none. */
  readonly bus?: Bus;
  /** Bytes of replay log this process holds in memory, over all sessions. */
  readonly memoryBytes: number;
  /** How the store is doing now; cheap, for `/health`. */
  health(): StoreHealth;
  /**
   * Whether a client is attached to the session. When the write buffer is
   * full, frames of detached sessions are dropped first. Sessions are taken
   * as attached until told otherwise.
   */
  setAttached(sessionId: string, attached: boolean): void;
  /**
   * Set by the handler; a durable store calls it when it finds that another
   * process took a session over (or it expired) while this one still wrote to
   * it: from then on nothing of it is written from here, so the socket should
   * be let go.
   */
  onLost?: (sessionId: string) => void;
  /**
   * Records a new session. A named `conversation` is kept for the retention
   * period (not just the resume window), and what is said in it is searchable.
   */
  create(sessionId: string, owner: string | null, conversation?: string | null): void;
  /** The owner's conversations, the most recently active first. */
  conversations(owner: string | null): Promise<ConversationSummary[]>;
  /** Messages of the owner's conversations that match `query`, best first. */
  searchMemory(owner: string | null, query: string, limit: number): Promise<MemoryHit[]>;
  /**
   * Clears the history and search memory of one of the owner's conversations,
   * or of all of them; returns the session ids cleared.
   */
  clearMemory(owner: string | null, conversation?: string): Promise<string[]>;
  history(sessionId: string): Promise<ChatMessage[]>;
  appendHistory(sessionId: string, messages: ChatMessage[]): Promise<void>;
  clearHistory(sessionId: string): Promise<void>;
  /**
   * Records an emitted frame. `open` (the session's open queries as of this
   * frame) comes with frames that start or end a query and is made durable
   * together with the frame.
   */
  appendFrame(sessionId: string, frame: StoredFrame, open?: string[]): void;
  /**
   * Resolves once the frame with this seq is durable — or once waiting
   * longer would be pointless (the store is down, the session was let go).
   * Only asked of a durable store.
   */
  whenDurable(sessionId: string, seq: number): Promise<void>;
  /**
   * Set by the runtime; a durable store calls it after each write with the
   * frames that became durable, in order (for the sockets on other processes).
   */
  onCommitted?: (frames: { session: string; seq: number; json: string }[]) => void;
  /** Records which queries are accepted and not yet ended. */
  setOpenQueries(sessionId: string, ids: string[]): void;
  /**
   * Records the turn that waits for people (null: none), so another process
   * can carry it on; a store that does not outlive the process ignores it.
   */
  setSuspended(sessionId: string, turn: unknown): void;
  framesAfter(sessionId: string, seq: number): Promise<ReplayResult>;
  /** Makes everything recorded so far durable. */
  flush(): Promise<void>;
  /** Reads a session another process may hold; null when there is none. */
  load(sessionId: string): Promise<SessionRecord | null>;
  /**
   * Makes this process the holder of a session; returns its fresh record.
   * With `from`, only if nobody holds it or `from` still does: two processes
   * claiming at once cannot both win; null when it lost or there is no such
   * session.
   */
  claim(sessionId: string, from?: string | null): Promise<SessionRecord | null>;
  /**
   * Creates a named conversation held by this process, unless it exists
   * already (another process, or an earlier life): false then — load and
   * join it instead.
   */
  createHeld(sessionId: string, owner: string | null, conversation: string): Promise<boolean>;
  /** Lets go of a session without forgetting it (another process may take it). */
  release(sessionId: string): Promise<void>;
  /** Forgets the session entirely. */
  delete(sessionId: string): Promise<void>;
  /** Periodic upkeep: liveness of held sessions, deletion of expired ones. */
  maintain(): Promise<void>;
  close(): Promise<void>;
}

/** What a trimmed slot of the replay log holds until the array is compacted. */
const TRIMMED: StoredFrame = { seq: 0, json: "" };

interface MemoryEntry {
  history: ChatMessage[];
  historyChars: number;
  frames: StoredFrame[];
  /** Index of the oldest live frame; the array is compacted lazily. */
  head: number;
  frameBytes: number;
}

/** The characters a message costs in the history budget. */
function messageChars(m: ChatMessage): number {
  let n = m.content?.length ?? 0;
  if (m.role === "assistant" && m.tool_calls) {
    for (const c of m.tool_calls) n += c.function.name.length + c.function.arguments.length;
  }
  return n;
}

/**
 * Trims a history to the limits, oldest first. What is kept always starts at
 * a user message, so the model never sees an answer without its question nor
 * a tool result without the call that asked for it.
 *
 * @example
 * ```ts
 * import { trimHistory } from "./store.ts";
 * const kept = trimHistory([{ role: "user", content: "hi" }], 50, 200_000);
 * ```
 */
export function trimHistory(
  messages: ChatMessage[],
  maxMessages: number,
  maxChars: number,
): ChatMessage[] {
  let start = Math.max(0, messages.length - maxMessages);
  let chars = 0;
  for (let i = start; i < messages.length; i++) chars += messageChars(messages[i]);
  while (start < messages.length && chars > maxChars) {
    chars -= messageChars(messages[start]);
    start++;
  }
  while (start < messages.length && messages[start].role !== "user") start++;
  return start === 0 ? messages : messages.slice(start);
}

/**
 * The default store: everything in this isolate's memory, gone when it ends.
 *
 * @example
 * ```ts
 * const store = new MemoryStore({
 *   maxHistory: 50, maxHistoryChars: 200_000, replayMaxFrames: 2000, replayMaxBytes: 1 << 20,
 * });
 * await store.appendHistory("s1", [{ role: "user", content: "hi" }]);
 * ```
 */
export class MemoryStore implements SessionStore {
  readonly durable = false;
  #entries = new Map<string, MemoryEntry>();
  #bytes = 0;

  constructor(readonly limits: StoreLimits) {}

  get memoryBytes(): number {
    return this.#bytes;
  }

  readonly #since = new Date().toISOString();

  /** Nothing to wait for: memory is always ok. */
  health(): StoreHealth {
    return { state: "ok", since: this.#since, pendingFrames: 0, pendingBytes: 0, droppedFrames: 0 };
  }

  setAttached(): void {}

  create(id: string): void {
    this.#entry(id);
  }

  createHeld(id: string): Promise<boolean> {
    if (this.#entries.has(id)) return Promise.resolve(false);
    this.#entry(id);
    return Promise.resolve(true);
  }

  setOpenQueries(): void {}

  setSuspended(): void {}

  /** Memory is as durable as it gets here, at once. */
  whenDurable(): Promise<void> {
    return Promise.resolve();
  }

  // Memory (conversations kept, searched, cleared): see the memory work.
  conversations(): Promise<ConversationSummary[]> {
    return Promise.resolve([]);
  }

  searchMemory(): Promise<MemoryHit[]> {
    return Promise.resolve([]);
  }

  clearMemory(): Promise<string[]> {
    return Promise.resolve([]);
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing outlives this process, so there is never another holder. */
  load(): Promise<SessionRecord | null> {
    return Promise.resolve(null);
  }

  claim(): Promise<SessionRecord | null> {
    return Promise.resolve(null);
  }

  release(): Promise<void> {
    return Promise.resolve();
  }

  maintain(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  #entry(id: string): MemoryEntry {
    let e = this.#entries.get(id);
    if (!e) {
      e = { history: [], historyChars: 0, frames: [], head: 0, frameBytes: 0 };
      this.#entries.set(id, e);
    }
    return e;
  }

  history(id: string): Promise<ChatMessage[]> {
    return Promise.resolve([...(this.#entries.get(id)?.history ?? [])]);
  }

  appendHistory(id: string, messages: ChatMessage[]): Promise<void> {
    const e = this.#entry(id);
    e.history = trimHistory(
      [...e.history, ...messages],
      this.limits.maxHistory,
      this.limits.maxHistoryChars,
    );
    return Promise.resolve();
  }

  clearHistory(id: string): Promise<void> {
    const e = this.#entries.get(id);
    if (e) e.history = [];
    return Promise.resolve();
  }

  appendFrame(id: string, frame: StoredFrame): void {
    const e = this.#entry(id);
    e.frames.push(frame);
    e.frameBytes += frame.json.length;
    this.#bytes += frame.json.length;
    const { replayMaxFrames, replayMaxBytes } = this.limits;
    while (
      e.frames.length - e.head > replayMaxFrames ||
      (e.frameBytes > replayMaxBytes && e.frames.length - e.head > 1)
    ) {
      e.frameBytes -= e.frames[e.head].json.length;
      this.#bytes -= e.frames[e.head].json.length;
      // Let go of the trimmed frame now, not when the array is next compacted.
      e.frames[e.head] = TRIMMED;
      e.head++;
    }
    // Compacting in bulk keeps appends O(1) amortised instead of shift()ing per frame.
    if (e.head > 1024 && e.head * 2 > e.frames.length) {
      e.frames = e.frames.slice(e.head);
      e.head = 0;
    }
  }

  framesAfter(id: string, seq: number): Promise<ReplayResult> {
    const e = this.#entries.get(id);
    if (!e || e.frames.length === e.head) return Promise.resolve({ ok: true, frames: [] });
    const oldest = e.frames[e.head].seq;
    if (seq + 1 < oldest) {
      return Promise.resolve({
        ok: false,
        reason: "trimmed",
        missingSeq: seq + 1,
        oldestSeq: oldest,
      });
    }
    const from = e.head + Math.max(0, seq + 1 - oldest);
    return Promise.resolve({ ok: true, frames: e.frames.slice(from) });
  }

  delete(id: string): Promise<void> {
    this.#bytes -= this.#entries.get(id)?.frameBytes ?? 0;
    this.#entries.delete(id);
    return Promise.resolve();
  }
}
