/**
 * TypeScript client for the `agent_websocket` edge function, protocol v1. No dependencies:
 * runs in browsers, Deno and Node 20+ (pass the `ws` package's `WebSocket` where there is no
 * global one). Reconnects with jittered backoff, resumes the session without losing or
 * repeating frames, and turns each query into a promise plus a stream of text deltas.
 *
 * @example
 * ```ts
 * import { AgentClient } from "./agent_client.ts";
 * const client = new AgentClient("ws://127.0.0.1:8000");
 * await client.connect();
 * const answer = client.ask("Hello!");
 * for await (const delta of answer.deltas) console.log(delta);
 * console.log((await answer.response).usage);
 * client.close();
 * ```
 * @module
 */
import {
  backoffDelay,
  closeDisposition,
  isDuplicate,
  type ReconnectOptions,
  type ReconnectPolicy,
  resolveReconnect,
  resumeUrl,
} from "./backoff.ts";

import {
  type ClientFrame,
  type ErrorFrame,
  type FinalResponse,
  type FrameBase,
  type NotificationFrame,
  type PongFrame,
  PROTOCOL,
  type ResponseFrame,
  type ServerFrame,
  type StatusFrame,
} from "./protocol.ts";

export type { ReconnectOptions } from "./backoff.ts";
export * from "./protocol.ts";

// How long to wait for the replay announced by `resumed` before sending queued frames anyway,
// so a server that miscounts `replayed` delays the queue instead of wedging it.
const REPLAY_GRACE_MS = 2000;
// A socket must stay up this long before the backoff starts over; otherwise a server that
// accepts and then drops at once would be hammered at the shortest delay forever.
const STABLE_MS = 3000;
// Resends of one unanswered frame across resumes before it fails: a frame that makes the
// server drop the connection must not be replayed into it forever.
const MAX_RESENDS = 2;

// ---------------------------------------------------------------------------------------------
// Errors

/**
 * Every failure the SDK reports. Server `error` frames keep their `code`; the client adds
 * `session_lost`, `closed`, `unauthorized`, `policy_violation`, `too_many_connections`,
 * `session_taken_over`, `session_timeout`, `reconnect_failed`, `delivery_failed`,
 * `offline_queue_full`,
 * `message_too_large`, `duplicate_id`, `token_error` and `invalid_url`.
 *
 * @example
 * ```ts
 * try {
 *   await client.ask("hi").response;
 * } catch (e) {
 *   if (e instanceof AgentError && e.retryable) setTimeout(retry, e.retryAfterMs ?? 1000);
 * }
 * ```
 */
export class AgentError extends Error {
  override name = "AgentError";
  /** Machine-readable code, e.g. `rate_limited` or `session_lost`. */
  readonly code: string;
  /** Whether sending the same thing again can succeed. */
  readonly retryable: boolean;
  readonly retryAfterMs?: number;
  /** Query or command id the error belongs to. */
  readonly id?: string;
  /** The server's frame, when the error came from one (carries `issues` for bad messages). */
  readonly frame?: ErrorFrame;

  constructor(
    code: string,
    message: string,
    opts: { retryable?: boolean; retryAfterMs?: number; id?: string; frame?: ErrorFrame } = {},
  ) {
    super(message);
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.retryAfterMs = opts.retryAfterMs;
    this.id = opts.id;
    this.frame = opts.frame;
  }

  /**
   * Wraps a server `error` frame.
   *
   * @example
   * ```ts
   * client.on("frame", (f) => f.type === "error" && console.log(AgentError.fromFrame(f).code));
   * ```
   */
  static fromFrame(f: ErrorFrame): AgentError {
    return new AgentError(String(f.code), String(f.message ?? f.code), {
      retryable: f.retryable === true,
      retryAfterMs: typeof f.retry_after_ms === "number" ? f.retry_after_ms : undefined,
      id: typeof f.id === "string" ? f.id : undefined,
      frame: f,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Options and events

/**
 * What the SDK needs from a WebSocket implementation: the browser/Deno/Node global, or the
 * `ws` package's class.
 *
 * @example
 * ```ts
 * import WebSocket from "ws";
 * const WS: WebSocketConstructor = WebSocket;
 * ```
 */
export type WebSocketConstructor = new (url: string, protocols?: string[]) => {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: unknown;
  onclose: unknown;
  onerror: unknown;
};

/**
 * Liveness probing. The client pings after `intervalMs` without any frame and drops the
 * socket when nothing at all arrives within `timeoutMs` of that ping.
 *
 * @example
 * ```ts
 * new AgentClient(url, { heartbeat: { intervalMs: 5000, timeoutMs: 3000 } });
 * ```
 */
export interface HeartbeatOptions {
  /** Default 15000; lowered to the server's `heartbeat_ms` when that is smaller. */
  intervalMs?: number;
  /** Default 10000. */
  timeoutMs?: number;
}

/**
 * Options of {@link AgentClient}.
 *
 * @example
 * ```ts
 * const opts: AgentClientOptions = { token: () => getAccessToken(), maxOfflineQueue: 20 };
 * ```
 */
export interface AgentClientOptions {
  /** WebSocket implementation; defaults to `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Sent as subprotocol `jwt-<token>`; a function is called again before every reconnect. */
  token?: string | (() => string | Promise<string>);
  /** Extra subprotocols; `agent-websocket.v1` is always offered first. */
  protocols?: string[];
  /** Backoff policy, or `false` to never reconnect. */
  reconnect?: ReconnectOptions | false;
  /** Time from opening a socket to `connected`/`resumed` before trying again. Default 10000. */
  connectTimeoutMs?: number;
  /** Liveness probing, or `false` to turn it off. */
  heartbeat?: HeartbeatOptions | false;
  /** Frames kept while disconnected, sent in order on (re)connect. Default 100. */
  maxOfflineQueue?: number;
}

/**
 * Lifecycle of a client.
 *
 * @example
 * ```ts
 * if (client.state === "open") client.send({ type: "ping" });
 * ```
 */
export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/**
 * Event names and payloads of {@link AgentClient.on}. `error` carries every error: server
 * `error` frames (wrapped, the frame is in `.frame`) and client-side ones such as a terminal
 * close.
 *
 * @example
 * ```ts
 * const onClose = (e: AgentClientEvents["close"]) => console.log(e.code, e.willReconnect);
 * client.on("close", onClose);
 * ```
 */
export interface AgentClientEvents {
  frame: ServerFrame;
  notification: NotificationFrame;
  status: StatusFrame;
  response: ResponseFrame;
  error: AgentError;
  pong: PongFrame;
  /** A session is usable: after `connected`, or after `resumed` (`replayed` frames follow). */
  open: { sessionId: string; resumed: boolean; replayed: number };
  close: { code: number; reason: string; willReconnect: boolean };
  reconnecting: { attempt: number; delayMs: number };
  /** The session id changed; `lost` when a resume was refused and a fresh session began. */
  session: { sessionId: string; previousSessionId?: string; lost: boolean };
}

/**
 * Options of {@link AgentClient.ask}.
 *
 * @example
 * ```ts
 * client.ask("Summarise", { model: "gpt-4o-mini", stream: false, metadata: { page: 3 } });
 * ```
 */
export interface AskOptions {
  /** Defaults to a random UUID. */
  id?: string;
  model?: string;
  /** Default true; with false only the final frame comes (and `deltas` yields it whole). */
  stream?: boolean;
  metadata?: Record<string, unknown>;
}

/**
 * A query in progress.
 *
 * @example
 * ```ts
 * const h: AskHandle = client.ask("Tell me a story");
 * setTimeout(() => h.cancel(), 5000);
 * for await (const d of h.deltas) console.log(d);
 * ```
 */
export interface AskHandle {
  readonly id: string;
  /** Text deltas as they arrive; ends with the query, throws its `AgentError` on failure. */
  readonly deltas: AsyncIterable<string>;
  /** The final frame; rejects with `AgentError`. Survives reconnects. */
  readonly response: Promise<FinalResponse>;
  /** Asks the server to stop; the query then ends with `finish_reason: "cancelled"`. */
  cancel(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Internals

interface Socket {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

type Listener<T> = (event: T) => void;
type AnyFrame = FrameBase & { type: string; [field: string]: unknown };

/** Buffers deltas so each iterator sees all of them, whenever it starts reading. */
class DeltaStream implements AsyncIterable<string> {
  #chunks: string[] = [];
  #ended = false;
  #error: unknown;
  #wakers: (() => void)[] = [];

  push(chunk: string) {
    this.#chunks.push(chunk);
    this.#wake();
  }

  end(error?: unknown) {
    this.#ended = true;
    this.#error = error;
    this.#wake();
  }

  #wake() {
    for (const w of this.#wakers.splice(0)) w();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    for (let i = 0;;) {
      if (i < this.#chunks.length) yield this.#chunks[i++];
      else if (this.#ended) {
        if (this.#error !== undefined) throw this.#error;
        return;
      } else await new Promise<void>((r) => this.#wakers.push(r));
    }
  }
}

/** Anything awaiting an answer frame. Kept after a drop so a resume can finish or resend it. */
interface Pending {
  frame: ClientFrame;
  /** Written to a socket of the current session (the server may have it). */
  sent: boolean;
  /** Some frame about it arrived (the server surely has it). */
  acked: boolean;
  resends: number;
  fail(err: AgentError): void;
}

interface Ask extends Pending {
  stream: DeltaStream;
  streamed: boolean;
  resolve(r: FinalResponse): void;
}

interface Call extends Pending {
  id: string;
  matches(f: AnyFrame): boolean;
  resolve(f: AnyFrame): void;
}

interface Outgoing {
  frame: ClientFrame;
  onSent?(): void;
}

function uuid(): string {
  const c = globalThis.crypto;
  // randomUUID is missing in insecure browser contexts (plain http pages).
  if (typeof c?.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (typeof c?.getRandomValues === "function") c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const noop = () => {};
const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

/** A copy of a client-side error attributed to one query or call. */
function withId(err: AgentError, id: string | undefined): AgentError {
  return new AgentError(err.code, err.message, { retryable: err.retryable, id });
}

// ---------------------------------------------------------------------------------------------
// Client

/**
 * A connection to the agent that outlives sockets: it reconnects with backoff, resumes the
 * session (replayed frames are delivered once, in order) and keeps queries alive across drops.
 *
 * @example
 * ```ts
 * const client = new AgentClient("wss://<ref>.supabase.co/functions/v1/agent_websocket", {
 *   token: async () => (await supabase.auth.getSession()).data.session!.access_token,
 * });
 * client.on("status", (s) => console.log(s.state));
 * await client.connect();
 * const { content } = await client.ask("What is a WebSocket?").response;
 * ```
 */
export class AgentClient {
  readonly #url: string;
  readonly #WS: WebSocketConstructor;
  readonly #token: AgentClientOptions["token"];
  readonly #protocols: string[];
  readonly #policy: ReconnectPolicy;
  readonly #connectTimeoutMs: number;
  readonly #heartbeat: Required<HeartbeatOptions> | false;
  readonly #maxQueue: number;

  #state: ClientState = "idle";
  #ws?: Socket;
  #generation = 0;
  #sessionId?: string;
  #lastSeq = 0;
  #handshaken = false;
  #sessionEnded = false;
  #attempt = 0;
  #openedAt = 0;
  #replayLeft = 0;
  #limits: Record<string, unknown> = {};
  #serverHeartbeatMs = Infinity;
  #lastFrameAt = 0;
  #probeSentAt = 0;
  #timers: { [K in "retry" | "connect" | "heartbeat" | "replay"]?: ReturnType<typeof setTimeout> } =
    {};

  #queue: Outgoing[] = [];
  #asks = new Map<string, Ask>();
  #calls = new Set<Call>();
  #ready?: { promise: Promise<void>; resolve(): void; reject(e: AgentError): void };
  // Listener<never> is the common supertype of every listener type.
  #listeners = new Map<keyof AgentClientEvents, Set<Listener<never>>>();

  /**
   * Creates a client; nothing happens on the network until {@link connect}.
   *
   * @example
   * ```ts
   * import WebSocket from "ws"; // Node 20
   * const client = new AgentClient("ws://127.0.0.1:8000", { WebSocket, reconnect: { maxAttempts: 5 } });
   * ```
   */
  constructor(url: string, options: AgentClientOptions = {}) {
    const WS = options.WebSocket ??
      (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError(
        "No global WebSocket: pass one, e.g. { WebSocket } from the 'ws' package",
      );
    }
    this.#url = url;
    this.#WS = WS;
    this.#token = options.token;
    this.#protocols = [PROTOCOL, ...(options.protocols ?? []).filter((p) => p !== PROTOCOL)];
    this.#policy = resolveReconnect(options.reconnect);
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#heartbeat = options.heartbeat === false ? false : {
      intervalMs: options.heartbeat?.intervalMs ?? 15_000,
      timeoutMs: options.heartbeat?.timeoutMs ?? 10_000,
    };
    this.#maxQueue = options.maxOfflineQueue ?? 100;
  }

  /** @example `if (client.state === "reconnecting") showBanner();` */
  get state(): ClientState {
    return this.#state;
  }

  /** @example `localStorage.sessionId = client.sessionId;` */
  get sessionId(): string | undefined {
    return this.#sessionId;
  }

  /** Highest `seq` delivered so far. @example `console.log(client.lastSeq);` */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /**
   * Subscribes to an event; returns the unsubscribe function.
   *
   * @example
   * ```ts
   * const off = client.on("reconnecting", ({ attempt, delayMs }) => console.log(attempt, delayMs));
   * off();
   * ```
   */
  on<K extends keyof AgentClientEvents>(
    type: K,
    listener: Listener<AgentClientEvents[K]>,
  ): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = new Set());
    set.add(listener);
    return () => this.off(type, listener);
  }

  /**
   * Removes a listener added with {@link on}.
   *
   * @example
   * ```ts
   * client.off("status", onStatus);
   * ```
   */
  off<K extends keyof AgentClientEvents>(type: K, listener: Listener<AgentClientEvents[K]>): void {
    this.#listeners.get(type)?.delete(listener);
  }

  /**
   * Opens the connection. Resolves on the first `connected` or `resumed`; failed attempts are
   * retried per the reconnect policy, and it rejects only when the client stops (terminal
   * close code, attempts exhausted, or {@link close}). Calling it again is harmless, and after
   * `close()` it starts over (resuming the session when the server still has it).
   *
   * @example
   * ```ts
   * await client.connect();
   * ```
   */
  connect(): Promise<void> {
    if (this.#state === "open") return Promise.resolve();
    if (!this.#ready) {
      let resolve = noop, reject: (e: AgentError) => void = noop;
      const promise = new Promise<void>((res, rej) => [resolve, reject] = [res, rej]);
      promise.catch(noop); // callers that do not await must not crash the process
      this.#ready = { promise, resolve, reject };
    }
    if (this.#state === "idle" || this.#state === "closed") {
      this.#state = "connecting";
      this.#attempt = 0;
      void this.#open();
    }
    return this.#ready.promise;
  }

  /**
   * Sends a query. While disconnected (or before {@link connect}) it waits in the offline
   * queue, bounded by `maxOfflineQueue`; a full queue rejects `response` with
   * `offline_queue_full`.
   *
   * @example
   * ```ts
   * const h = client.ask("Write a haiku", { model: "gpt-4o-mini" });
   * for await (const d of h.deltas) Deno.stdout.writeSync(new TextEncoder().encode(d));
   * const { usage, timing } = await h.response;
   * ```
   */
  ask(content: string, options: AskOptions = {}): AskHandle {
    const id = options.id ?? uuid();
    const frame: ClientFrame = { type: "query", id, content };
    if (options.model !== undefined) frame.model = options.model;
    if (options.stream !== undefined) frame.stream = options.stream;
    if (options.metadata !== undefined) frame.metadata = options.metadata;

    const stream = new DeltaStream();
    let resolve: (r: FinalResponse) => void = noop, reject: (e: AgentError) => void = noop;
    const response = new Promise<FinalResponse>((res, rej) => [resolve, reject] = [res, rej]);
    response.catch(noop); // users reading only `deltas` get the error there instead
    const ask: Ask = {
      frame,
      sent: false,
      acked: false,
      resends: 0,
      stream,
      streamed: false,
      resolve: (r) => (stream.end(), resolve(r)),
      fail: (e) => (stream.end(e), reject(e)),
    };
    const handle: AskHandle = {
      id,
      deltas: stream,
      response,
      // The answer already tells how the query ended, so a cancel that lost the race with the
      // end of the query is not an error worth an unhandled rejection.
      cancel: () => this.#asks.has(id) ? this.cancel(id).then(noop, noop) : Promise.resolve(),
    };
    try {
      if (this.#asks.has(id)) throw new AgentError("duplicate_id", `Query ${id} is in progress`);
      this.#checkLimits(frame);
      this.#asks.set(id, ask);
      this.#enqueue({ frame, onSent: () => ask.sent = true });
    } catch (e) {
      if (this.#asks.get(id) === ask) this.#asks.delete(id);
      ask.fail(e instanceof AgentError ? e : new AgentError("internal_error", String(e)));
    }
    return handle;
  }

  /**
   * Sends a command and resolves with the `notification` answering it (matched by id).
   *
   * @example
   * ```ts
   * const n = await client.command("stats");
   * ```
   */
  command(name: string, args?: Record<string, unknown>): Promise<NotificationFrame> {
    const id = uuid();
    const frame: ClientFrame = { type: "command", name, id };
    if (args) frame.args = args;
    return this.#call<NotificationFrame>(id, frame, (f) => f.type === "notification");
  }

  /**
   * Cancels query `id`, or the one in flight when omitted.
   *
   * @example
   * ```ts
   * await client.cancel(handle.id);
   * ```
   */
  cancel(id?: string): Promise<NotificationFrame> {
    return this.command("cancel", id === undefined ? undefined : { id });
  }

  /**
   * Clears the conversation history kept by the server.
   *
   * @example
   * ```ts
   * await client.reset();
   * ```
   */
  reset(): Promise<NotificationFrame> {
    return this.command("reset");
  }

  /**
   * Fetches the conversation history (a `history` notification).
   *
   * @example
   * ```ts
   * const n = await client.history();
   * console.log(n.messages ?? n.content);
   * ```
   */
  history(): Promise<NotificationFrame> {
    return this.command("history");
  }

  /**
   * Fetches session statistics (a `stats` notification).
   *
   * @example
   * ```ts
   * console.log(await client.stats());
   * ```
   */
  stats(): Promise<NotificationFrame> {
    return this.command("stats");
  }

  /**
   * Rates a response; resolves with the `feedback_received` notification.
   *
   * @example
   * ```ts
   * await client.feedback(handle.id, "up", "Spot on");
   * ```
   */
  feedback(id: string, rating: "up" | "down", comment?: string): Promise<NotificationFrame> {
    const frame: ClientFrame = { type: "feedback", id, rating };
    if (comment !== undefined) frame.comment = comment;
    // The answer may omit the id; then answers go to pending feedback in order (FIFO).
    return this.#call<NotificationFrame>(
      id,
      frame,
      (f) => f.type === "notification" && f.event === "feedback_received",
    );
  }

  /**
   * Measures the round trip in ms (from the moment the ping is written to the socket).
   *
   * @example
   * ```ts
   * console.log(`${await client.ping()} ms`);
   * ```
   */
  ping(): Promise<number> {
    const id = uuid();
    let t0 = 0;
    return this.#call<PongFrame>(
      id,
      { type: "ping", id },
      (f) => f.type === "pong",
      () => t0 = performance.now(),
    ).then(() => performance.now() - t0);
  }

  /**
   * Sends a raw frame now, or queues it while disconnected. Throws `AgentError`
   * `offline_queue_full` past `maxOfflineQueue`, and `closed` after the client stopped.
   *
   * @example
   * ```ts
   * client.send({ type: "feedback", id: "q1", rating: "down" });
   * ```
   */
  send(frame: ClientFrame): void {
    this.#enqueue({ frame });
  }

  /**
   * Closes for good: no reconnect; pending queries and calls reject with `closed`.
   *
   * @example
   * ```ts
   * client.close();
   * ```
   */
  close(code = 1000, reason = "Client closed"): void {
    if (this.#state === "closed") return;
    const wasIdle = this.#state === "idle";
    this.#dropSocket(code, reason);
    this.#stop(new AgentError("closed", "The client was closed"));
    if (!wasIdle) this.#emit("close", { code, reason, willReconnect: false });
  }

  // -------------------------------------------------------------------------------------------
  // Connection lifecycle

  async #open(): Promise<void> {
    const generation = ++this.#generation;
    let token: string | undefined;
    try {
      token = typeof this.#token === "function" ? await this.#token() : this.#token;
    } catch (e) {
      if (generation !== this.#generation || this.#state === "closed") return;
      this.#emit("error", new AgentError("token_error", `Token provider failed: ${e}`));
      return this.#onClose(4000, "Token provider failed");
    }
    // close() or connect() may have run while the token was being fetched.
    if (generation !== this.#generation || this.#state === "closed") return;

    const protocols = token ? [...this.#protocols, `jwt-${token}`] : this.#protocols;
    let ws: Socket;
    try {
      const url = this.#sessionId
        ? resumeUrl(this.#url, this.#sessionId, this.#lastSeq)
        : this.#url;
      ws = new this.#WS(url, protocols) as unknown as Socket;
    } catch (e) {
      const err = new AgentError("invalid_url", `Cannot open ${this.#url}: ${e}`);
      this.#emit("error", err);
      return this.#stop(err);
    }
    this.#ws = ws;
    this.#handshaken = false;
    ws.onmessage = (ev) => this.#ws === ws && this.#onMessage(ev.data);
    // Some runtimes report 0 instead of 1006 when the connection is lost without a close frame.
    ws.onclose = (ev) => this.#ws === ws && this.#onClose(ev.code || 1006, ev.reason ?? "");
    // Must stay set: the `ws` package throws on an "error" event nobody listens to.
    ws.onerror = noop;
    this.#timers.connect = setTimeout(() => this.#abort("Connect timeout"), this.#connectTimeoutMs);
  }

  /** Detaches the current socket and stops its timers; closes it when given a code. */
  #dropSocket(code?: number, reason?: string) {
    const ws = this.#ws;
    this.#ws = undefined;
    this.#handshaken = false;
    this.#replayLeft = 0;
    for (const t of Object.values(this.#timers)) clearTimeout(t);
    if (!ws || code === undefined) return;
    ws.onmessage = ws.onclose = noop;
    try {
      ws.close(code, reason);
    } catch { /* already closing */ }
  }

  /** Gives up on a socket that looks dead, as if it had closed abnormally. */
  #abort(reason: string) {
    this.#dropSocket(4000, reason);
    this.#onClose(1006, reason);
  }

  #onClose(code: number, reason: string) {
    this.#dropSocket();
    if (this.#state === "closed") return;
    if (this.#openedAt && Date.now() - this.#openedAt >= STABLE_MS) this.#attempt = 0;
    this.#openedAt = 0;
    let { reconnect, error } = closeDisposition(code, reason);
    // The notification is the reliable signal; the close reason text is only a convention.
    if (this.#sessionEnded) [reconnect, error] = [false, "session_timeout"];
    if (code === 1009) {
      // Resending the frame that was too big would only loop: fail it instead.
      this.#failSent(new AgentError("message_too_large", "Frame too large for the server"), true);
    }
    const willReconnect = reconnect && this.#attempt < this.#policy.maxAttempts;
    this.#emit("close", { code, reason, willReconnect });
    if (this.#stopped()) return; // a listener called close()
    if (!willReconnect) {
      const err = new AgentError(
        error ?? "reconnect_failed",
        error
          ? `Connection closed (${code}${reason ? ` ${reason}` : ""})`
          : `Gave up after ${this.#attempt} reconnect attempts`,
        { retryable: error === undefined || error === "too_many_connections" },
      );
      if (error === "session_timeout") this.#sessionId = undefined;
      this.#emit("error", err);
      return this.#stop(err);
    }
    const delayMs = backoffDelay(this.#attempt, this.#policy);
    this.#attempt++;
    this.#state = "reconnecting";
    this.#timers.retry = setTimeout(() => void this.#open(), delayMs);
    this.#emit("reconnecting", { attempt: this.#attempt, delayMs });
  }

  // A method, not an inline comparison: TypeScript cannot see that listeners change the state.
  #stopped(): boolean {
    return this.#state === "closed";
  }

  #stop(err: AgentError) {
    this.#dropSocket(1000, "Client stopped");
    this.#generation++;
    this.#state = "closed";
    this.#sessionEnded = false;
    this.#queue = [];
    const pending = [...this.#asks.values(), ...this.#calls];
    this.#asks.clear();
    this.#calls.clear();
    for (const p of pending) p.fail(withId(err, p.frame.id));
    this.#ready?.reject(err);
    this.#ready = undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Incoming frames

  #onMessage(data: unknown) {
    this.#lastFrameAt = Date.now();
    let f: AnyFrame;
    try {
      const text = typeof data === "string" ? data : textDecoder.decode(data as ArrayBuffer);
      f = JSON.parse(text);
    } catch {
      return; // the protocol only sends JSON text frames; nothing sensible to do with others
    }
    if (!f || typeof f !== "object" || typeof f.type !== "string") return;
    if (this.#handshaken) return this.#accept(f);

    if (f.type === "notification" && (f.event === "connected" || f.event === "resumed")) {
      return this.#onHandshake(f as NotificationFrame);
    }
    // An error before the handshake explains a refused resume or login; it may already be
    // numbered in a new session, so it bypasses the seq filter of the old one.
    if (f.type === "error") this.#dispatch(f);
    else this.#accept(f);
  }

  #onHandshake(f: NotificationFrame) {
    clearTimeout(this.#timers.connect);
    const resumed = f.event === "resumed";
    const previous = this.#sessionId;
    const sessionId = typeof f.session_id === "string" ? f.session_id : previous ?? "";
    // The resumed notification is numbered relative to the replay in ways servers may differ
    // on (this one sends seq 0), so it neither passes the seq filter nor moves lastSeq.
    const replayed = resumed ? Math.max(0, Number(f.replayed) || 0) : 0;
    if (!resumed) {
      this.#lastSeq = typeof f.seq === "number" ? f.seq : 0;
      this.#sessionEnded = false;
      if (f.limits && typeof f.limits === "object") {
        this.#limits = f.limits as Record<string, unknown>;
      }
      if (typeof f.heartbeat_ms === "number" && f.heartbeat_ms > 0) {
        this.#serverHeartbeatMs = f.heartbeat_ms;
      }
    }
    this.#sessionId = sessionId;
    this.#handshaken = true;
    this.#openedAt = Date.now();
    this.#replayLeft = replayed;
    this.#state = "open";
    this.#probeSentAt = 0;
    this.#scheduleHeartbeat(this.#heartbeatInterval());
    if (replayed) this.#timers.replay = setTimeout(() => this.#afterReplay(), REPLAY_GRACE_MS);

    // Events come last: a listener may call close(), which every step below must respect.
    // A `connected` answer to a resume means the old session is gone.
    const lost = !resumed && previous !== undefined;
    if (lost || sessionId !== previous) {
      this.#emit("session", { sessionId, previousSessionId: previous, lost });
    }
    if (lost) {
      // Queries the old session had are gone; frames never sent go to the new session. The
      // server's not_found / resume_gap error, before or after `connected`, is an error event.
      this.#failSent(
        new AgentError("session_lost", `Session ${previous} expired; a new session started`, {
          retryable: true,
        }),
      );
    }
    if (this.#state === "open") this.#dispatch(f);
    if (this.#state === "open") this.#emit("open", { sessionId, resumed, replayed });
    this.#ready?.resolve();
    this.#ready = undefined;
    if (!replayed) this.#afterReplay();
  }

  #accept(f: AnyFrame) {
    const replaying = this.#replayLeft > 0;
    if (replaying) this.#replayLeft--;
    if (!isDuplicate(f.seq, this.#lastSeq)) {
      if (typeof f.seq === "number" && f.seq > this.#lastSeq) this.#lastSeq = f.seq;
      this.#dispatch(f);
    }
    if (replaying && this.#replayLeft === 0) this.#afterReplay();
  }

  /** The session is caught up: redo what the old socket may have swallowed, then the queue. */
  #afterReplay() {
    clearTimeout(this.#timers.replay);
    if (this.#state !== "open") return; // a listener closed the client meanwhile
    this.#replayLeft = 0;
    // A frame written to a dying socket may never have reached the server. If the replay holds
    // no answer to it, the server never read it (every frame gets an answer), so sending it
    // again cannot duplicate it.
    for (const p of [...this.#asks.values(), ...this.#calls]) {
      if (!p.sent || p.acked) continue;
      if (++p.resends <= MAX_RESENDS) {
        this.#write(p.frame);
        continue;
      }
      const id = p.frame.id;
      if (id !== undefined && this.#asks.get(id) === p) this.#asks.delete(id);
      this.#calls.delete(p as Call);
      const why = "The connection kept dropping before the server answered";
      p.fail(new AgentError("delivery_failed", why, { retryable: true, id }));
    }
    while (this.#queue.length && this.#canSend()) {
      const { frame, onSent } = this.#queue.shift()!;
      this.#write(frame);
      onSent?.();
    }
  }

  #dispatch(f: AnyFrame) {
    this.#emit("frame", f as ServerFrame);
    const id = typeof f.id === "string" ? f.id : undefined;
    const ask = id === undefined ? undefined : this.#asks.get(id);
    if (ask) ask.acked = true;
    switch (f.type) {
      case "notification":
        if (f.event === "session_timeout") this.#sessionEnded = true;
        this.#emit("notification", f as NotificationFrame);
        return this.#settleCall(f);
      case "status":
        return this.#emit("status", f as StatusFrame);
      case "pong":
        this.#emit("pong", f as PongFrame);
        return this.#settleCall(f);
      case "error": {
        const err = AgentError.fromFrame(f as ErrorFrame);
        this.#emit("error", err);
        if (ask) {
          this.#asks.delete(id!);
          return ask.fail(err);
        }
        const call = id === undefined ? undefined : this.#findCall(id);
        if (call) {
          this.#calls.delete(call);
          call.fail(err);
        }
        return;
      }
      case "response": {
        const r = f as ResponseFrame;
        this.#emit("response", r);
        if (!ask) return;
        if (typeof r.delta === "string" && r.delta) {
          ask.stream.push(r.delta);
          ask.streamed = true;
        }
        if (r.done !== true) return;
        // stream:false answers come whole; the deltas iterator still yields the text once.
        if (!ask.streamed && typeof r.content === "string" && r.content) ask.stream.push(r.content);
        this.#asks.delete(id!);
        ask.resolve(r as FinalResponse);
      }
    }
  }

  #findCall(id: string): Call | undefined {
    for (const c of this.#calls) if (c.id === id) return c;
  }

  #settleCall(f: AnyFrame) {
    const id = typeof f.id === "string" ? f.id : undefined;
    for (const c of this.#calls) {
      if ((id === undefined ? c.frame.type === "feedback" : c.id === id) && c.matches(f)) {
        this.#calls.delete(c);
        return c.resolve(f);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Outgoing frames

  #call<T extends AnyFrame>(
    id: string,
    frame: ClientFrame,
    matches: (f: AnyFrame) => boolean,
    onSent?: () => void,
  ): Promise<T> {
    return new Promise<T>((resolve, fail) => {
      const settle = resolve as (f: AnyFrame) => void; // `matches` vouches for the type
      const call: Call = {
        id,
        frame,
        sent: false,
        acked: false,
        resends: 0,
        matches,
        fail,
        resolve: settle,
      };
      // A throw here (queue full, client closed) rejects the promise: executors catch.
      this.#enqueue({ frame, onSent: () => (call.sent = true, onSent?.()) });
      this.#calls.add(call);
    });
  }

  #canSend(): boolean {
    return this.#state === "open" && this.#handshaken && this.#replayLeft === 0 &&
      this.#ws !== undefined;
  }

  #enqueue(item: Outgoing) {
    if (this.#state === "closed") throw new AgentError("closed", "The client is closed");
    if (this.#canSend()) {
      this.#write(item.frame);
      return item.onSent?.();
    }
    if (this.#queue.length >= this.#maxQueue) {
      throw new AgentError(
        "offline_queue_full",
        `Offline queue is full (${this.#maxQueue} frames)`,
        { retryable: true },
      );
    }
    this.#queue.push(item);
  }

  #write(frame: ClientFrame) {
    // A send on a socket that is closing is lost silently; resume resends unanswered frames.
    try {
      this.#ws?.send(JSON.stringify(frame));
    } catch { /* the close handler takes it from here */ }
  }

  /** Rejects what the server may have had; frames never sent stay queued for the next session. */
  #failSent(err: AgentError, unackedOnly = false) {
    for (const [id, ask] of this.#asks) {
      if (ask.sent && !(unackedOnly && ask.acked)) {
        this.#asks.delete(id);
        ask.fail(withId(err, id));
      }
    }
    for (const c of this.#calls) {
      if (c.sent && !(unackedOnly && c.acked)) {
        this.#calls.delete(c);
        c.fail(err);
      }
    }
  }

  /** Rejects a query the server would refuse for size, rather than risk a 1009 close. */
  #checkLimits(frame: ClientFrame & { type: "query" }) {
    const maxChars = this.#limits.max_content_chars;
    const maxBytes = this.#limits.max_message_bytes;
    const tooLong = typeof maxChars === "number" && frame.content.length > maxChars;
    if (
      tooLong ||
      (typeof maxBytes === "number" && textEncoder.encode(JSON.stringify(frame)).length > maxBytes)
    ) {
      throw new AgentError("message_too_large", "Query exceeds the server's size limits", {
        id: frame.id,
      });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Heartbeat

  #heartbeatInterval(): number {
    return this.#heartbeat ? Math.min(this.#heartbeat.intervalMs, this.#serverHeartbeatMs) : 0;
  }

  #scheduleHeartbeat(ms: number) {
    if (!this.#heartbeat) return;
    clearTimeout(this.#timers.heartbeat);
    this.#timers.heartbeat = setTimeout(() => this.#onHeartbeat(), Math.max(0, ms));
  }

  // One timer re-armed from timestamps instead of one reset per frame: streams are chatty.
  #onHeartbeat() {
    if (!this.#heartbeat || !this.#ws) return;
    const now = Date.now();
    if (this.#probeSentAt && this.#lastFrameAt < this.#probeSentAt) {
      const left = this.#probeSentAt + this.#heartbeat.timeoutMs - now;
      return left <= 0 ? this.#abort("Heartbeat timeout") : this.#scheduleHeartbeat(left);
    }
    this.#probeSentAt = 0;
    const idle = now - this.#lastFrameAt;
    const interval = this.#heartbeatInterval();
    if (idle < interval) return this.#scheduleHeartbeat(interval - idle);
    this.#write({ type: "ping", id: `heartbeat-${uuid()}` });
    this.#probeSentAt = now;
    this.#scheduleHeartbeat(this.#heartbeat.timeoutMs);
  }

  // -------------------------------------------------------------------------------------------
  // Events

  #emit<K extends keyof AgentClientEvents>(type: K, event: AgentClientEvents[K]) {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const listener of [...set] as Listener<AgentClientEvents[K]>[]) {
      try {
        listener(event);
      } catch (e) {
        // A throwing listener must not corrupt the client's state; surface it asynchronously.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
