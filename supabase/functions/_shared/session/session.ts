/**
 * One session: a conversation and the sockets attached to it — one for a
 * plain session, any number for a named conversation, here or on other
 * processes. It owns the frame sequence: every frame it emits gets the next
 * `seq`, is serialised once, kept in the store's replay log and sent to every
 * socket attached here (other processes get it from the store, through the
 * bus). Its queries belong to its {@linkcode Turns}.
 *
 * @module
 */
import type { OutgoingFrame } from "../protocol/wire.ts";
import { CLOSE } from "../protocol/codes.ts";
import type { SessionStore } from "../store/store.ts";
import type { AgentUser } from "../agent/definition.ts";
import { type TurnRunner, Turns } from "../turn/turns.ts";
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
  /** The conversation's name (`?conversation=`); null or absent for a plain session. */
  conversation?: string | null;
}

/**
 * A socket attached to a session: here (`ws`), or on another process that
 * relays the session's frames to it (`instance`).
 */
export interface Peer {
  /** The socket's id (`socket_id`), unique per connection. */
  readonly id: string;
  /** The socket, when it is attached to this process. */
  readonly ws: WebSocket | null;
  /** The process relaying to it, when it is attached elsewhere. */
  readonly instance: string | null;
  /** The highest seq this socket has been sent (local sockets). */
  sentUpTo: number;
  /** Closes the socket, wherever it is, after sending it `say` (a frame outside the sequence). */
  close(code: number, reason: string, say?: Record<string, unknown>): void;
  /** When it was attached, for the maximum connection age. */
  readonly attachedAt?: number;
  /**
   * While set, the socket is catching up on its replay: live frames wait here
   * and follow the replay ({@linkcode Session.release}), so none falls between.
   */
  held?: { seq: number; json: string }[];
  /** A remote socket that joined fresh: the seq its frames begin after (told to its relay). */
  startsAt?: number;
}

/** A frame emitted and not yet sent, because a frame before it is not yet durable. */
interface Outgoing {
  seq: number;
  json: string;
  ready: boolean;
}

/**
 * Whether a frame starts or ends a query, or starts a session: such frames
 * are sent only once durable (with a durable store), so that no process can
 * leave a query the client saw start without an end, nor end one twice, and
 * a session a client has heard of can be resumed anywhere at once.
 */
function isBoundary(frame: OutgoingFrame): boolean {
  if (frame.type === "response") return frame.done === true;
  if (frame.type === "error") return frame.id !== undefined;
  if (frame.type === "notification") return frame.event === "connected";
  return frame.type === "status" && (frame.state === "queued" || frame.state === "thinking");
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
  /** When the newest socket was attached, for the maximum connection age. */
  attachedAt = Date.now();
  /** When the last socket went away; null while one is attached (here or elsewhere). */
  detachedAt: number | null = null;
  /** The sockets attached, by socket id: a plain session has at most one. */
  readonly peers = new Map<string, Peer>();
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
  /** Frames waiting behind one that is not yet durable; null nearly always (memory is per session). */
  #outbox: Outgoing[] | null = null;
  /** Called once the outbox is empty again. */
  #whenSent: (() => void)[] = [];

  readonly owner: string | null;
  readonly upstreamUser?: string;
  readonly limitKey: string;
  /** The conversation's name; null for a plain session (one socket, takeover). */
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

  /**
   * The seq of the last frame released to the sockets: below {@linkcode seq}
   * while a frame waits to be durable, with those after it.
   */
  get sentSeq(): number {
    return this.#outbox && this.#outbox.length > 0 ? this.#outbox[0].seq - 1 : this.#seq;
  }

  /** The socket attached here last, if any (a plain session has at most one). */
  get socket(): WebSocket | null {
    let last: WebSocket | null = null;
    for (const p of this.peers.values()) if (p.ws) last = p.ws;
    return last;
  }

  /** The most bytes queued on any socket here: how far behind the slowest reader is. */
  get backlog(): number {
    let most = 0;
    for (const p of this.peers.values()) {
      if (p.ws && p.ws.bufferedAmount > most) most = p.ws.bufferedAmount;
    }
    return most;
  }

  /** When the longest-attached socket here was attached (now, when none is). */
  get oldestAttachedAt(): number {
    let oldest = Date.now();
    for (const p of this.peers.values()) {
      if (p.ws && p.attachedAt !== undefined && p.attachedAt < oldest) oldest = p.attachedAt;
    }
    return oldest;
  }

  /** Whether a socket of this session is attached on another process (checked after every write). */
  hasRemotePeers(): boolean {
    for (const p of this.peers.values()) if (p.instance) return true;
    return false;
  }

  /** The processes that relay this session to sockets of theirs. */
  remoteInstances(): Set<string> {
    const out = new Set<string>();
    for (const p of this.peers.values()) if (p.instance) out.add(p.instance);
    return out;
  }

  /** Binds a socket; frames emitted from now on go to it too. */
  attach(peer: Peer): void {
    if (this.detachedAt !== null) this.store.setAttached(this.id, true);
    this.peers.set(peer.id, peer);
    this.attachedAt = Date.now();
    this.lastActivity = Date.now();
    this.detachedAt = null;
  }

  /** Unbinds a socket; once none is left, frames keep going to the replay log for a resume. */
  detach(peerId?: string): void {
    if (peerId !== undefined) this.peers.delete(peerId);
    if (this.peers.size > 0 || this.detachedAt !== null) return;
    this.detachedAt = Date.now();
    // A full write buffer drops the frames of detached sessions first.
    this.store.setAttached(this.id, false);
  }

  /**
   * Stamps, records and sends one frame; returns its seq (0 once closed).
   * `only` marks, in a conversation, the one socket the frame answers.
   */
  emit(frame: OutgoingFrame, only?: Peer): number {
    if (this.closed) return 0;
    const seq = ++this.#seq;
    const boundary = this.store.durable && isBoundary(frame);
    if (boundary && frame.id !== undefined && frame.type !== "status") {
      this.turns.noteEnded(frame.id);
    }
    // Appending the stamped fields to the serialised frame avoids copying the
    // frame object once per token; every frame is a non-empty object, so it ends in "}".
    const body = JSON.stringify(frame);
    const mark = only && this.conversation !== null ? `,"socket":${JSON.stringify(only.id)}` : "";
    const json = `${body.slice(0, -1)}${mark},"seq":${seq},"timestamp":"${isoNow()}"}`;
    this.store.appendFrame(
      this.id,
      { seq, json },
      boundary ? this.turns.openIds() : undefined,
    );
    if (!boundary && this.#outbox === null) {
      this.#send(seq, json);
      return seq;
    }
    const out: Outgoing = { seq, json, ready: !boundary };
    (this.#outbox ??= []).push(out);
    if (boundary) {
      this.store.whenDurable(this.id, seq).then((sent) => {
        // Never to be written: neither it nor what follows may be seen from here.
        if (!sent) return;
        out.ready = true;
        this.#pump();
      });
    }
    return seq;
  }

  /** Sends what waited in the outbox, up to the next frame not yet durable. */
  #pump(): void {
    const outbox = this.#outbox;
    while (outbox && outbox.length > 0 && outbox[0].ready) {
      const out = outbox.shift()!;
      if (!this.closed) this.#send(out.seq, out.json);
    }
    if (outbox?.length === 0 && this.#outbox === outbox) {
      this.#outbox = null;
      for (const fn of this.#whenSent.splice(0)) fn();
    }
  }

  /**
   * Resolves once every frame emitted so far has been sent (none waits to be
   * durable): a session is handed over only then, so its sockets see the end
   * of an answer before the goodbye.
   */
  whenSent(): Promise<void> {
    if (this.#outbox === null || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.#whenSent.push(resolve));
  }

  /** Sends a stamped frame to every socket here that has not had it. */
  #send(seq: number, json: string): void {
    for (const peer of this.peers.values()) {
      const ws = peer.ws;
      if (!ws || seq <= peer.sentUpTo || ws.readyState !== WebSocket.OPEN) continue;
      if (peer.held) {
        peer.held.push({ seq, json });
        continue;
      }
      // A client that stops reading must not grow our memory without bound.
      if (ws.bufferedAmount > this.#sendHardLimit) {
        this.stoppedReading(peer);
        continue;
      }
      peer.sentUpTo = seq;
      try {
        ws.send(json);
      } catch {
        // The socket closed between the check and the send; onClose handles it.
      }
    }
  }

  /**
   * Sends replayed frames to one socket. Not held to the hard limit: the
   * replay is bounded by the replay log itself, and a client catching up on a
   * long answer is not one that stopped reading.
   */
  sendReplay(peer: Peer, frames: { seq: number; json: string }[]): void {
    for (const f of frames) {
      if (f.seq <= peer.sentUpTo) continue;
      peer.sentUpTo = f.seq;
      try {
        peer.ws?.send(f.json);
      } catch {
        // The socket closed meanwhile; onClose handles it.
      }
    }
  }

  /** A socket has had its replay: the live frames that waited meanwhile follow it. */
  release(peer: Peer): void {
    const held = peer.held;
    peer.held = undefined;
    if (held) this.sendReplay(peer, held);
  }

  /**
   * A client that stopped reading: its socket is closed (1013) and it may
   * resume when it can. In a plain session its answer ends too (nobody else
   * is waiting for it); in a conversation the others go on.
   */
  stoppedReading(peer?: Peer): void {
    const target = peer ?? [...this.peers.values()].find((p) => p.ws);
    if (!target?.ws || target.ws.readyState !== WebSocket.OPEN) return;
    if (this.conversation === null) this.turns.stopInFlight("slow_consumer");
    target.close(CLOSE.tryAgainLater, "Client is not reading");
  }

  /** Ends the session here: its queries stop, nothing more is emitted. */
  close(why: "closed" | "released"): void {
    if (this.closed) return;
    this.turns.stop(why);
    this.closed = true;
    this.#outbox = null;
    for (const fn of this.#whenSent.splice(0)) fn();
  }
}
