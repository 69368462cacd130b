/**
 * One session: a conversation bound (for now) to one socket. It owns the
 * frame sequence: every frame it emits gets the next `seq`, is serialised
 * once, kept in the store's replay log and sent if a socket is attached.
 *
 * @module
 */
import type { OutgoingFrame } from "../protocol/frames.ts";
import type { SessionStore } from "../store/store.ts";
import { QueryQueue } from "../turn/queue.ts";

let lastMs = 0;
let lastIso = "";

/** The current time as ISO-8601, formatted at most once per millisecond. */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/** The generation a session is running right now. */
export interface InFlight {
  id: string;
  controller: AbortController;
  /** Text streamed so far; a cancel ends the query with it. */
  content: string;
}

/** Feedback a client gave on a response. */
export interface Feedback {
  id: string;
  rating: "up" | "down";
  comment?: string;
  at: string;
}

/** Per-session counters, reported by the `stats` command. */
export interface SessionCounters {
  queries: number;
  responses: number;
  errors: number;
  cancelled: number;
  completionTokens: number;
}

/** Limits a session is created with. */
export interface SessionOptions {
  maxQueue: number;
  /** Above this many bytes queued on the socket, sending stops and `onOverflow` runs. */
  sendHardLimitBytes: number;
}

/**
 * @example
 * ```ts
 * const session = new Session(crypto.randomUUID(), store, {
 *   maxQueue: 10, sendHardLimitBytes: 4 << 20,
 * }, null);
 * session.attach(socket);
 * session.emit({ type: "pong" });
 * ```
 */
export class Session {
  readonly createdAt = Date.now();
  lastActivity = Date.now();
  /** When the current socket was attached, for the maximum connection age. */
  attachedAt = Date.now();
  /** When the last socket went away; null while one is attached. */
  detachedAt: number | null = null;
  socket: WebSocket | null = null;
  readonly queue: QueryQueue;
  /** Runs once when a client stops reading and its socket's queue passes the hard limit. */
  onOverflow: (() => void) | null = null;
  readonly #sendHardLimit: number;
  inFlight: InFlight | null = null;
  readonly feedback: Feedback[] = [];
  readonly counters: SessionCounters = {
    queries: 0,
    responses: 0,
    errors: 0,
    cancelled: 0,
    completionTokens: 0,
  };
  /** Set once the session is over; nothing is emitted after. */
  closed = false;
  #seq = 0;

  /**
   * @param owner the authenticated user id, or null when auth is off
   * @param upstreamUser the non-identifying id sent upstream as `user`
   */
  constructor(
    readonly id: string,
    readonly store: SessionStore,
    opts: SessionOptions,
    readonly owner: string | null,
    readonly upstreamUser?: string,
    /** The seq to continue from when another process held the session before. */
    startSeq = 0,
  ) {
    this.#seq = startSeq;
    this.queue = new QueryQueue(opts.maxQueue);
    this.#sendHardLimit = opts.sendHardLimitBytes;
  }

  /** The key per-user limits count this session under. */
  get rateKey(): string {
    return this.owner ?? this.id;
  }

  /** The seq of the last frame emitted. */
  get seq(): number {
    return this.#seq;
  }

  /** Binds a socket; frames emitted from now on go to it. */
  attach(socket: WebSocket): void {
    this.socket = socket;
    this.attachedAt = Date.now();
    this.lastActivity = Date.now();
    this.detachedAt = null;
  }

  /** Forgets the socket; frames keep going to the replay log for a resume. */
  detach(): void {
    this.socket = null;
    this.detachedAt = Date.now();
  }

  /** Stamps, records and sends one frame; returns its seq (0 once closed). */
  emit(frame: OutgoingFrame): number {
    if (this.closed) return 0;
    const seq = ++this.#seq;
    // Appending the two stamped fields to the serialised frame avoids copying the
    // frame object once per token; every frame is a non-empty object, so it ends in "}".
    const body = JSON.stringify(frame);
    const json = `${body.slice(0, -1)},"seq":${seq},"timestamp":"${isoNow()}"}`;
    this.store.appendFrame(this.id, { seq, json });
    this.sendRaw(json);
    return seq;
  }

  /** Sends already-serialised text if the socket can take it. */
  sendRaw(json: string): void {
    const ws = this.socket;
    if (ws && ws.readyState === WebSocket.OPEN) {
      // A client that stops reading must not grow our memory without bound.
      if (ws.bufferedAmount > this.#sendHardLimit) {
        const overflow = this.onOverflow;
        this.onOverflow = null;
        overflow?.();
        return;
      }
      try {
        ws.send(json);
      } catch {
        // The socket closed between the check and the send; onClose handles it.
      }
    }
  }

  /** Tells the store which queries are open, so another process can end them after a crash. */
  syncOpenQueries(): void {
    const ids = this.queue.ids();
    if (this.inFlight) ids.unshift(this.inFlight.id);
    this.store.setOpenQueries(this.id, ids);
  }

  /** Whether a query id is in flight or waiting. */
  knows(id: string): boolean {
    return this.inFlight?.id === id || this.queue.has(id);
  }
}
