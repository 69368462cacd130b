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
import {
  DEFAULT_MEMORY_MAX_MESSAGES,
  hitContent,
  matchCount,
  MAX_CONVERSATIONS_LISTED,
  memorable,
  searchTerms,
} from "./memory.ts";

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
  /**
   * Most messages one conversation keeps for search (default
   * {@linkcode DEFAULT_MEMORY_MAX_MESSAGES}); the oldest said go first.
   */
  memoryMaxMessages?: number;
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
   * database was away or because the database refused it). `cleared`: the
   * conversation was cleared (`clear_memory`) after it was sent, and its
   * frames went with its history.
   */
  reason: "trimmed" | "lost" | "cleared";
  /** The first seq after the asked one that is gone. */
  missingSeq: number;
  /** The oldest seq still kept (0 when none is). */
  oldestSeq: number;
  /** With `cleared`: the last seq the clear took; the frames after it are kept. */
  clearedSeq?: number;
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
   * This process found out that another holds the session now: everything of
   * it held or buffered here is dropped (never written, never replayed from
   * here), then {@linkcode onLost} is called.
   */
  disown(sessionId: string): void;
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
   * Clears the history, search memory and replay log of one of the owner's
   * conversations, or of all of them; returns the session ids cleared. A
   * replay from before the clear is a gap (`cleared`), one from after it goes
   * on as before. What this process holds of them is dropped too; other
   * processes are told through {@linkcode SessionStore.forgetHistory}.
   */
  clearMemory(owner: string | null, conversation?: string): Promise<string[]>;
  /**
   * Another process cleared these conversations: drop what this one holds of
   * them (a cached history, writes not yet made), so the clear sticks.
   */
  forgetHistory(sessionIds: string[]): Promise<void>;
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
   * Resolves true once the frame with this seq is durable, or once waiting
   * longer would hold the stream for an outage (the store is down); false
   * when it will never be written (the session was let go, the store closed)
   * and so must not be sent. Only asked of a durable store.
   */
  whenDurable(sessionId: string, seq: number): Promise<boolean>;
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
  /**
   * Periodic upkeep: liveness of held sessions, deletion of expired ones, and
   * the oldest messages of conversations written to since the last upkeep
   * dropped past {@linkcode StoreLimits.memoryMaxMessages}.
   */
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
  /** The seq of the last frame appended. */
  lastSeq: number;
  /** Frames up to this seq were let go of (a conversation released); a replay of them is a gap. */
  droppedThrough: number;
  /** Frames up to this seq were cleared with the conversation's memory. */
  clearedThrough: number;
  /** Set when the session is a named conversation. */
  conversation?: KeptConversation;
}

/** What the memory store keeps of a conversation, beyond a session's history. */
interface KeptConversation {
  owner: string | null;
  name: string;
  /** The last message or join (ms since the epoch). */
  updatedAt: number;
  /** The same as a counter, so two in one millisecond still have an order. */
  touched: number;
  /** The last messages said, for search, oldest first. */
  log: { role: "user" | "assistant"; content: string; at: number; order: number }[];
  logChars: number;
  /** Whether a session of this process holds it (else it is kept, released). */
  held: boolean;
}

/**
 * Most characters of one conversation's messages the memory store keeps for
 * search, besides the message cap (the oldest messages go first): its memory
 * is the isolate's.
 */
export const MEMORY_LOG_CHARS = 200_000;
/**
 * Most released conversations the memory store keeps; past it the least
 * recently active one is forgotten.
 */
export const MEMORY_KEPT_CONVERSATIONS = 1000;

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
  readonly #maxMessages: number;

  constructor(readonly limits: StoreLimits) {
    this.#maxMessages = limits.memoryMaxMessages ?? DEFAULT_MEMORY_MAX_MESSAGES;
  }

  get memoryBytes(): number {
    return this.#bytes;
  }

  readonly #since = new Date().toISOString();

  /** Nothing to wait for: memory is always ok. */
  health(): StoreHealth {
    return { state: "ok", since: this.#since, pendingFrames: 0, pendingBytes: 0, droppedFrames: 0 };
  }

  setAttached(): void {}

  /** Nothing here is shared with another process: there is never another holder. */
  disown(): void {}

  create(id: string, owner: string | null, conversation: string | null = null): void {
    const e = this.#entry(id);
    if (conversation === null) return;
    e.conversation ??= {
      owner,
      name: conversation,
      updatedAt: 0,
      touched: 0,
      log: [],
      logChars: 0,
      held: true,
    };
    this.#hold(e.conversation);
  }

  /** A conversation kept here (held or released) exists already: join it instead. */
  createHeld(id: string, owner: string | null, conversation: string): Promise<boolean> {
    if (this.#entries.has(id)) return Promise.resolve(false);
    this.create(id, owner, conversation);
    return Promise.resolve(true);
  }

  setOpenQueries(): void {}

  setSuspended(): void {}

  /** Memory is as durable as it gets here, at once. */
  whenDurable(): Promise<boolean> {
    return Promise.resolve(true);
  }

  // --- memory: conversations kept, searched, cleared -------------------------

  /** Released conversations kept. */
  #kept = 0;
  /** Recency of logged messages and of activity, for ties within a millisecond. */
  #order = 0;

  /** A session of this process holds the conversation again (it counts as a join). */
  #hold(c: KeptConversation): void {
    if (!c.held) this.#kept--;
    c.held = true;
    c.updatedAt = Date.now();
    c.touched = ++this.#order;
  }

  /** The owner's conversations, each with its session id. */
  #conversationsOf(
    owner: string | null,
  ): [string, MemoryEntry & { conversation: KeptConversation }][] {
    const out: [string, MemoryEntry & { conversation: KeptConversation }][] = [];
    for (const [id, e] of this.#entries) {
      if (e.conversation && e.conversation.owner === owner) out.push([id, e as never]);
    }
    return out;
  }

  conversations(owner: string | null): Promise<ConversationSummary[]> {
    const list = this.#conversationsOf(owner).map(([, e]) => e.conversation)
      .sort((a, b) => b.touched - a.touched)
      .slice(0, MAX_CONVERSATIONS_LISTED);
    return Promise.resolve(list.map((c) => ({
      name: c.name,
      messages: c.log.length,
      updated_at: new Date(c.updatedAt).toISOString(),
    })));
  }

  /** Ranked by how many of the query's terms a message holds, then the newest. */
  searchMemory(owner: string | null, query: string, limit: number): Promise<MemoryHit[]> {
    const terms = searchTerms(query);
    if (terms.length === 0) return Promise.resolve([]);
    const found: { hit: MemoryHit; order: number }[] = [];
    for (const [, { conversation: c }] of this.#conversationsOf(owner)) {
      for (const m of c.log) {
        const score = matchCount(terms, m.content);
        if (score === 0) continue;
        found.push({
          order: m.order,
          hit: {
            conversation: c.name,
            role: m.role,
            content: hitContent(m.content),
            timestamp: new Date(m.at).toISOString(),
            score,
          },
        });
      }
    }
    found.sort((a, b) => b.hit.score - a.hit.score || b.order - a.order);
    return Promise.resolve(found.slice(0, limit).map((f) => f.hit));
  }

  clearMemory(owner: string | null, conversation?: string): Promise<string[]> {
    const ids: string[] = [];
    for (const [id, e] of this.#conversationsOf(owner)) {
      if (conversation !== undefined && e.conversation.name !== conversation) continue;
      e.history = [];
      e.historyChars = 0;
      e.conversation.log = [];
      e.conversation.logChars = 0;
      // Its frames carry what was said: they go too. Sockets attached now go on live.
      this.#bytes -= e.frameBytes;
      e.frames = [];
      e.head = 0;
      e.frameBytes = 0;
      e.clearedThrough = e.lastSeq;
      ids.push(id);
    }
    return Promise.resolve(ids);
  }

  /** One process: {@linkcode MemoryStore.clearMemory} already dropped everything. */
  forgetHistory(): Promise<void> {
    return Promise.resolve();
  }

  /** Logs what was said in a conversation for search, within its bounds. */
  #remember(c: KeptConversation, messages: ChatMessage[]): void {
    const at = Date.now();
    for (const m of memorable(messages)) {
      c.log.push({ role: m.role, content: m.content, at, order: ++this.#order });
      c.logChars += m.content.length;
    }
    let drop = 0;
    while (
      drop < c.log.length &&
      (c.log.length - drop > this.#maxMessages || c.logChars > MEMORY_LOG_CHARS)
    ) c.logChars -= c.log[drop++].content.length;
    if (drop > 0) c.log = c.log.slice(drop);
    c.updatedAt = at;
    c.touched = ++this.#order;
  }

  /** Forgets the least recently active released conversations, down to 90% of the bound. */
  #evictKept(): void {
    if (this.#kept <= MEMORY_KEPT_CONVERSATIONS) return;
    const released = [...this.#entries].filter(([, e]) => e.conversation && !e.conversation.held)
      .sort(([, a], [, b]) => a.conversation!.touched - b.conversation!.touched);
    const target = Math.floor(MEMORY_KEPT_CONVERSATIONS * 0.9);
    for (const [id] of released.slice(0, this.#kept - target)) this.delete(id);
  }

  #record(id: string, e: MemoryEntry): SessionRecord | null {
    const c = e.conversation;
    if (!c) return null;
    return {
      id,
      owner: c.owner,
      lastSeq: e.lastSeq,
      openQueries: [],
      instance: null,
      instanceAlive: false,
      suspended: null,
      conversation: c.name,
    };
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * Nothing outlives this process, so there is never another holder; a
   * conversation is kept, though, so a rejoin continues it.
   */
  load(id: string): Promise<SessionRecord | null> {
    const e = this.#entries.get(id);
    return Promise.resolve(e ? this.#record(id, e) : null);
  }

  claim(id: string): Promise<SessionRecord | null> {
    const e = this.#entries.get(id);
    if (e?.conversation) this.#hold(e.conversation);
    return Promise.resolve(e ? this.#record(id, e) : null);
  }

  /**
   * Keeps a conversation (its history, search log and last seq) and lets go
   * of its frames: a replay from before this point is a gap. A plain session
   * is left as it is.
   */
  release(id: string): Promise<void> {
    const e = this.#entries.get(id);
    const c = e?.conversation;
    if (!e || !c || !c.held) return Promise.resolve();
    c.held = false;
    this.#kept++;
    this.#bytes -= e.frameBytes;
    e.frames = [];
    e.head = 0;
    e.frameBytes = 0;
    e.droppedThrough = e.lastSeq;
    this.#evictKept();
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
      e = {
        history: [],
        historyChars: 0,
        frames: [],
        head: 0,
        frameBytes: 0,
        lastSeq: 0,
        droppedThrough: 0,
        clearedThrough: 0,
      };
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
    if (e.conversation) this.#remember(e.conversation, messages);
    return Promise.resolve();
  }

  clearHistory(id: string): Promise<void> {
    const e = this.#entries.get(id);
    if (e) e.history = [];
    return Promise.resolve();
  }

  appendFrame(id: string, frame: StoredFrame): void {
    const e = this.#entry(id);
    e.lastSeq = Math.max(e.lastSeq, frame.seq);
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
    if (e && seq < e.clearedThrough) {
      return Promise.resolve({
        ok: false,
        reason: "cleared",
        missingSeq: seq + 1,
        oldestSeq: e.frames.length === e.head ? 0 : e.frames[e.head].seq,
        clearedSeq: e.clearedThrough,
      });
    }
    if (e && e.frames.length === e.head && seq < e.droppedThrough) {
      return Promise.resolve({ ok: false, reason: "trimmed", missingSeq: seq + 1, oldestSeq: 0 });
    }
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
    const e = this.#entries.get(id);
    this.#bytes -= e?.frameBytes ?? 0;
    if (e?.conversation && !e.conversation.held) this.#kept--;
    this.#entries.delete(id);
    return Promise.resolve();
  }
}
