/**
 * One session: a conversation bound to one socket at a time. It owns the
 * frame sequence: every frame it emits gets the next `seq`, is serialised
 * once, kept in the store's replay log and sent if a socket is attached. Its
 * queries belong to its {@linkcode Turns}.
 *
 * @module
 */
import type { OutgoingFrame } from "../protocol/wire.ts";
import { CLOSE } from "../protocol/codes.ts";
import type { SessionStore } from "../store/store.ts";
import type { AgentUser } from "../agent/definition.ts";
import { type TurnRunner, Turns } from "../turn/turns.ts";
import { closeQuietly } from "./socket.ts";
import { FeedbackLog } from "./feedback.ts";

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
  /**
   * Above this many bytes queued on the socket the client is taken to have
   * stopped reading: its answer ends with `slow_consumer` and the socket closes.
   */
  sendHardLimitBytes: number;
}

/** Who a session belongs to and speaks for. */
export interface SessionOwner {
  /** The authenticated user id, or null when auth is off. */
  owner: string | null;
  /** The non-identifying id sent upstream as `user`. */
  upstreamUser?: string;
  /** Whom the per-user bounds count it under: the user id, or the client address without auth. */
  limitKey: string;
  /** The conversation's name when the session is a named conversation. */
  conversation?: string | null;
}

/**
 * @example
 * ```ts
 * import { Session } from "./session.ts";
 * import { MemoryStore } from "../store/store.ts";
 * const store = new MemoryStore({
 *   maxHistory: 50, maxHistoryChars: 200_000, replayMaxFrames: 2000, replayMaxBytes: 1 << 20,
 * });
 * const session = new Session(crypto.randomUUID(), store, {
 *   maxQueue: 10, sendHardLimitBytes: 4 << 20,
 * }, { owner: null, limitKey: "addr:127.0.0.1" }, async () => {});
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
  /** The queries of this session: waiting, running, answered. */
  readonly turns: Turns;
  readonly #sendHardLimit: number;
  readonly feedback = new FeedbackLog();
  /** The deployer's own per-session data (`ctx.state`). */
  readonly state: Record<string, unknown> = {};
  /** The user of the socket attached last, with their claims and token (for `ctx.supabase`). */
  user: AgentUser | null = null;
  token: string | null = null;
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

  readonly owner: string | null;
  readonly upstreamUser?: string;
  readonly limitKey: string;
  /** The conversation's name (`?conversation=`), or null for a plain session. */
  readonly conversation: string | null;

  /**
   * @param runTurn runs one of this session's queries to its terminal frame
   * @param startSeq the seq to continue from when another process held the session before
   */
  constructor(
    readonly id: string,
    readonly store: SessionStore,
    opts: SessionOptions,
    who: SessionOwner,
    runTurn: TurnRunner,
    startSeq = 0,
  ) {
    this.#seq = startSeq;
    this.owner = who.owner;
    this.upstreamUser = who.upstreamUser;
    this.limitKey = who.limitKey;
    this.conversation = who.conversation ?? null;
    this.turns = new Turns(this, runTurn, opts.maxQueue);
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
    if (this.detachedAt !== null) this.store.setAttached(this.id, true);
    this.socket = socket;
    this.attachedAt = Date.now();
    this.lastActivity = Date.now();
    this.detachedAt = null;
  }

  /** Forgets the socket; frames keep going to the replay log for a resume. */
  detach(): void {
    this.socket = null;
    this.detachedAt = Date.now();
    // A full write buffer drops the frames of detached sessions first.
    this.store.setAttached(this.id, false);
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
      if (ws.bufferedAmount > this.#sendHardLimit) return this.stoppedReading();
      try {
        ws.send(json);
      } catch {
        // The socket closed between the check and the send; onClose handles it.
      }
    }
  }

  /**
   * Sends a replayed frame. Not held to the hard limit: the replay is bounded
   * by the replay log itself, and a client catching up on a long answer is
   * not one that stopped reading.
   */
  sendReplay(json: string): void {
    try {
      this.socket?.send(json);
    } catch {
      // The socket closed meanwhile; onClose handles it.
    }
  }

  /** A client that stopped reading: end its answer, close; it may resume when it can. */
  stoppedReading(): void {
    const ws = this.socket;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    this.turns.stopInFlight("slow_consumer");
    closeQuietly(ws, CLOSE.tryAgainLater, "Client is not reading");
  }

  /** Ends the session here: its queries stop, nothing more is emitted. */
  close(why: "closed" | "released"): void {
    if (this.closed) return;
    this.turns.stop(why);
    this.closed = true;
  }
}
