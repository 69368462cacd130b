/**
 * The session store: a session's conversation history and the log of frames
 * it emitted (for replay on resume). Behind an interface so that a durable
 * store (Postgres) can replace the in-memory one without touching the handler.
 *
 * @module
 */
import type { ChatMessage } from "../model/model.ts";
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
  | { ok: true; frames: StoredFrame[] }
  /** The log no longer holds `seq + 1`: replay would leave a hole. */
  | { ok: false; oldestSeq: number };

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
  /** Records a new session. */
  create(sessionId: string, owner: string | null): void;
  history(sessionId: string): Promise<ChatMessage[]>;
  appendHistory(sessionId: string, messages: ChatMessage[]): Promise<void>;
  clearHistory(sessionId: string): Promise<void>;
  appendFrame(sessionId: string, frame: StoredFrame): void;
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
  /** Makes this process the holder of a session; returns its fresh record. */
  claim(sessionId: string): Promise<SessionRecord | null>;
  /** Lets go of a session without forgetting it (another process may take it). */
  release(sessionId: string): Promise<void>;
  /** Forgets the session entirely. */
  delete(sessionId: string): Promise<void>;
  /** Periodic upkeep: liveness of held sessions, deletion of expired ones. */
  maintain(): Promise<void>;
  close(): Promise<void>;
}

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

  create(id: string): void {
    this.#entry(id);
  }

  setOpenQueries(): void {}

  setSuspended(): void {}

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
    if (seq + 1 < oldest) return Promise.resolve({ ok: false, oldestSeq: oldest });
    const from = e.head + Math.max(0, seq + 1 - oldest);
    return Promise.resolve({ ok: true, frames: e.frames.slice(from) });
  }

  delete(id: string): Promise<void> {
    this.#bytes -= this.#entries.get(id)?.frameBytes ?? 0;
    this.#entries.delete(id);
    return Promise.resolve();
  }
}
