/**
 * A WebSocket that outlives its sockets: it reconnects with full-jitter backoff, gives up on a
 * socket that does not open in time or goes silent, keeps frames sent while offline in a bounded
 * queue, fetches the token again before every attempt, and stops for good on close codes that
 * say retrying cannot help. It knows nothing of the agent protocol; {@linkcode AgentClient}
 * builds on it through a few hooks (the URL of the next socket, when a socket counts as open,
 * the liveness probe, how to read a close).
 *
 * @example
 * ```ts
 * import { ReconnectingTransport } from "./transport.ts";
 * const t = new ReconnectingTransport("ws://127.0.0.1:8000", { reconnect: { maxAttempts: 5 } });
 * t.on("message", (data) => console.log(data));
 * t.send(JSON.stringify({ type: "ping" })); // queued until the socket opens
 * async function start() {
 *   await t.connect();
 * }
 * t.close();
 * ```
 * @module
 */
import {
  backoffDelay,
  type CloseDisposition,
  closeDisposition,
  type ReconnectOptions,
  type ReconnectPolicy,
  resolveReconnect,
} from "./backoff.ts";
import { Emitter, type Listener } from "./emitter.ts";
import { AgentError } from "./errors.ts";
import { CLOSE, TOKEN_SUBPROTOCOL_PREFIX } from "./protocol.ts";

// A socket must stay up this long before the backoff starts over; otherwise a server that
// accepts and then drops at once would be hammered at the shortest delay forever.
const STABLE_MS = 3000;
// Our own code for "the client gave up on this socket" (no close frame from the server).
const CLIENT_ABORT = 4000;
// Some runtimes report 0 instead of 1006 when the connection is lost without a close frame.
const ABNORMAL = 1006;

/**
 * What the transport needs from a WebSocket implementation: the browser/Deno/Node global, or
 * the `ws` package's class.
 *
 * @example
 * ```ts
 * import type { WebSocketConstructor } from "./transport.ts";
 * // Node 20: `import WebSocket from "ws"` gives one too.
 * const WS: WebSocketConstructor = globalThis.WebSocket;
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
 * Liveness probing. The transport probes after `intervalMs` without any frame and drops the
 * socket when nothing at all arrives within `timeoutMs` of that probe.
 *
 * @example
 * ```ts
 * import type { HeartbeatOptions } from "./transport.ts";
 * const heartbeat: HeartbeatOptions = { intervalMs: 5000, timeoutMs: 3000 };
 * ```
 */
export interface HeartbeatOptions {
  /** Default 15000; lowered by {@linkcode ReconnectingTransport.limitHeartbeat}. */
  intervalMs?: number;
  /** Default 10000. */
  timeoutMs?: number;
}

/**
 * A token, or a function that fetches one (called again before every connection attempt, so
 * it can return a refreshed token).
 *
 * @example
 * ```ts
 * import type { TokenProvider } from "./transport.ts";
 * const token: TokenProvider = async () => (await fetch("/token")).text();
 * ```
 */
export type TokenProvider = string | (() => string | Promise<string>);

/**
 * Connection options, shared by {@linkcode ReconnectingTransport} and `AgentClient`.
 *
 * @example
 * ```ts
 * import type { TransportOptions } from "./transport.ts";
 * const opts: TransportOptions = { token: () => localStorage.token, maxOfflineQueue: 20 };
 * ```
 */
export interface TransportOptions {
  /** WebSocket implementation; defaults to `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Sent as subprotocol `jwt-<token>`; a function is called again before every reconnect. */
  token?: TokenProvider;
  /** Subprotocols to offer (the token's is added after them). */
  protocols?: string[];
  /** Backoff policy, or `false` to never reconnect. */
  reconnect?: ReconnectOptions | false;
  /** Time from opening a socket until it counts as open before trying again. Default 10000. */
  connectTimeoutMs?: number;
  /** Liveness probing (needs a `probe` hook), or `false` to turn it off. */
  heartbeat?: HeartbeatOptions | false;
  /** Frames kept while disconnected, sent in order on (re)connect. Default 100. */
  maxOfflineQueue?: number;
}

/**
 * How the layer above steers the transport. Every hook is optional; without any the transport
 * is a plain reconnecting socket.
 *
 * @example
 * ```ts
 * import type { TransportHooks } from "./transport.ts";
 * const hooks: TransportHooks = { probe: () => JSON.stringify({ type: "ping" }) };
 * ```
 */
export interface TransportHooks {
  /** The URL of the next socket (e.g. with resume parameters). Default: the URL given. */
  url?(): string;
  /**
   * When true, a socket counts as open only once the layer above calls
   * {@linkcode ReconnectingTransport.opened} (after its handshake), and the offline queue waits
   * for {@linkcode ReconnectingTransport.release}. Default: open on the socket's `open` event.
   */
  handshake?: boolean;
  /** The frame that probes liveness. Without it there is no heartbeat. */
  probe?(): string;
  /** Adjusts how a close is read, e.g. to stop after the server announced the session's end. */
  classifyClose?(code: number, reason: string, disposition: CloseDisposition): CloseDisposition;
}

/**
 * Lifecycle of a connection.
 *
 * @example
 * ```ts
 * import type { ClientState } from "./transport.ts";
 * const banner = (s: ClientState) => s === "reconnecting" ? "Reconnecting…" : "";
 * ```
 */
export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/**
 * Events of {@linkcode ReconnectingTransport}.
 *
 * @example
 * ```ts
 * import type { TransportEvents } from "./transport.ts";
 * const onClose = (e: TransportEvents["close"]) => console.log(e.code, e.willReconnect);
 * ```
 */
export interface TransportEvents {
  /** A new socket is being opened; frames of earlier sockets will not arrive any more. */
  socket: { url: string; attempt: number };
  /** The socket counts as open. */
  open: undefined;
  /** A frame, as the socket delivered it (a string for text frames). */
  message: unknown;
  close: { code: number; reason: string; willReconnect: boolean };
  reconnecting: { attempt: number; delayMs: number };
  /** Failures of the transport itself: token provider, URL, terminal closes. */
  error: AgentError;
  /** The transport stopped for good (closed, refused, or out of attempts). */
  stop: AgentError;
}

interface Socket {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen?: (() => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

interface Outgoing {
  data: string;
  onSent?(): void;
}

const noop = () => {};

/**
 * A reconnecting WebSocket with an offline queue. Events: `socket`, `open`, `message`, `close`,
 * `reconnecting`, `error`, `stop`.
 *
 * @example
 * ```ts
 * import { ReconnectingTransport } from "./transport.ts";
 * const t = new ReconnectingTransport("ws://127.0.0.1:8000", { token: () => localStorage.token });
 * t.on("reconnecting", ({ attempt, delayMs }) => console.log(attempt, delayMs));
 * ```
 */
export class ReconnectingTransport {
  readonly #url: string;
  readonly #WS: WebSocketConstructor;
  readonly #token: TokenProvider | undefined;
  readonly #protocols: string[];
  readonly #policy: ReconnectPolicy;
  readonly #connectTimeoutMs: number;
  readonly #heartbeat: Required<HeartbeatOptions> | false;
  readonly #maxQueue: number;
  readonly #hooks: TransportHooks;
  readonly #events = new Emitter<TransportEvents>();

  #state: ClientState = "idle";
  #ws?: Socket;
  #generation = 0;
  #attempt = 0;
  #openedAt = 0;
  #held = false;
  #heartbeatCapMs = Infinity;
  #lastFrameAt = 0;
  #probeSentAt = 0;
  #timers: { [K in "retry" | "connect" | "heartbeat"]?: ReturnType<typeof setTimeout> } = {};
  #queue: Outgoing[] = [];
  #ready?: { promise: Promise<void>; resolve(): void; reject(e: AgentError): void };

  /**
   * Creates a transport; nothing happens on the network until {@linkcode connect}.
   *
   * @example
   * ```ts
   * import { ReconnectingTransport } from "./transport.ts";
   * // Node 20: pass `{ WebSocket }` from the "ws" package.
   * const t = new ReconnectingTransport("ws://127.0.0.1:8000", { WebSocket: globalThis.WebSocket });
   * ```
   */
  constructor(url: string, options: TransportOptions = {}, hooks: TransportHooks = {}) {
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
    this.#protocols = options.protocols ?? [];
    this.#policy = resolveReconnect(options.reconnect);
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#heartbeat = options.heartbeat === false || !hooks.probe ? false : {
      intervalMs: options.heartbeat?.intervalMs ?? 15_000,
      timeoutMs: options.heartbeat?.timeoutMs ?? 10_000,
    };
    this.#maxQueue = options.maxOfflineQueue ?? 100;
    this.#hooks = hooks;
  }

  /** @example `if (transport.state === "reconnecting") showBanner();` */
  get state(): ClientState {
    return this.#state;
  }

  /**
   * Subscribes to an event; returns the unsubscribe function.
   *
   * @example
   * ```ts
   * import { ReconnectingTransport } from "./transport.ts";
   * const transport = new ReconnectingTransport("ws://127.0.0.1:8000");
   * const off = transport.on("close", (e) => console.log(e.code));
   * off();
   * ```
   */
  on<K extends keyof TransportEvents>(type: K, listener: Listener<TransportEvents[K]>): () => void {
    return this.#events.on(type, listener);
  }

  /**
   * Opens the connection. Resolves once a socket counts as open; failed attempts are retried
   * per the reconnect policy, and it rejects only when the transport stops. Calling it again is
   * harmless; after {@linkcode close} it starts over.
   *
   * @example
   * ```ts
   * import { ReconnectingTransport } from "./transport.ts";
   * const transport = new ReconnectingTransport("ws://127.0.0.1:8000");
   * async function start() {
   *   await transport.connect();
   * }
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
   * With the `handshake` hook: the current socket completed the handshake and counts as open.
   *
   * @example
   * ```ts
   * import { ReconnectingTransport } from "./transport.ts";
   * const transport = new ReconnectingTransport("ws://127.0.0.1:8000", {}, { handshake: true });
   * transport.on("message", (m) => String(m).includes('"connected"') && transport.opened());
   * ```
   */
  opened(): void {
    if (!this.#ws || this.#state === "closed") return;
    clearTimeout(this.#timers.connect);
    this.#openedAt = Date.now();
    this.#state = "open";
    this.#probeSentAt = 0;
    this.#scheduleHeartbeat(this.#heartbeatInterval());
    this.#ready?.resolve();
    this.#ready = undefined;
    this.#events.emit("open", undefined);
  }

  /**
   * With the `handshake` hook: the layer above caught up (e.g. a replay ended); queued frames
   * go out now, in order.
   *
   * @example
   * ```ts
   * import { ReconnectingTransport } from "./transport.ts";
   * const transport = new ReconnectingTransport("ws://127.0.0.1:8000");
   * transport.on("open", () => transport.release());
   * ```
   */
  release(): void {
    this.#held = false;
    while (this.#queue.length && this.#canSend()) {
      const { data, onSent } = this.#queue.shift()!;
      this.#write(data);
      onSent?.();
    }
  }

  /**
   * Sends now, or queues while disconnected (or held). Throws `AgentError` `offline_queue_full`
   * past `maxOfflineQueue`, and `closed` after the transport stopped. `onSent` runs when the
   * frame is written to a socket.
   *
   * @example
   * ```ts
   * import { ReconnectingTransport } from "./transport.ts";
   * const transport = new ReconnectingTransport("ws://127.0.0.1:8000");
   * transport.send(JSON.stringify({ type: "ping" }), () => console.log("written"));
   * ```
   */
  send(data: string, onSent?: () => void): void {
    if (this.#state === "closed") throw new AgentError("closed", "The client is closed");
    if (this.#canSend()) {
      this.#write(data);
      return onSent?.();
    }
    if (this.#queue.length >= this.#maxQueue) {
      throw new AgentError(
        "offline_queue_full",
        `Offline queue is full (${this.#maxQueue} frames)`,
        { retryable: true },
      );
    }
    this.#queue.push({ data, onSent });
  }

  /**
   * Writes to the current socket at once, past the queue (for frames that must precede it, such
   * as resends after a resume). Returns false when there is no socket.
   *
   * @example
   * ```ts
   * import { ReconnectingTransport } from "./transport.ts";
   * const transport = new ReconnectingTransport("ws://127.0.0.1:8000");
   * transport.on("open", () => transport.write(JSON.stringify({ type: "ping" })));
   * ```
   */
  write(data: string): boolean {
    if (!this.#ws) return false;
    this.#write(data);
    return true;
  }

  /**
   * Lowers the heartbeat interval, e.g. to the server's announced heartbeat.
   *
   * @example
   * ```ts
   * import { ReconnectingTransport } from "./transport.ts";
   * const transport = new ReconnectingTransport("ws://127.0.0.1:8000");
   * transport.limitHeartbeat(5000);
   * ```
   */
  limitHeartbeat(ms: number): void {
    if (ms > 0) this.#heartbeatCapMs = ms;
  }

  /**
   * Closes for good: no reconnect; the queue is dropped and `stop` fires with `closed`.
   *
   * @example
   * ```ts
   * import { ReconnectingTransport } from "./transport.ts";
   * const transport = new ReconnectingTransport("ws://127.0.0.1:8000");
   * transport.close();
   * ```
   */
  close(code: number = CLOSE.normal, reason = "Client closed"): void {
    if (this.#state === "closed") return;
    const wasIdle = this.#state === "idle";
    this.#dropSocket(code, reason);
    this.#stop(new AgentError("closed", "The client was closed"));
    if (!wasIdle) this.#events.emit("close", { code, reason, willReconnect: false });
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
      this.#events.emit("error", new AgentError("token_error", `Token provider failed: ${e}`));
      return this.#onClose(CLIENT_ABORT, "Token provider failed");
    }
    // close() or connect() may have run while the token was being fetched.
    if (generation !== this.#generation || this.#state === "closed") return;

    const protocols = token
      ? [...this.#protocols, `${TOKEN_SUBPROTOCOL_PREFIX}${token}`]
      : this.#protocols;
    const url = this.#hooks.url?.() ?? this.#url;
    let ws: Socket;
    try {
      ws = new this.#WS(url, protocols) as unknown as Socket;
    } catch (e) {
      const err = new AgentError("invalid_url", `Cannot open ${url}: ${e}`);
      this.#events.emit("error", err);
      return this.#stop(err);
    }
    this.#ws = ws;
    this.#held = this.#hooks.handshake === true;
    this.#lastFrameAt = Date.now();
    ws.onmessage = (ev) => {
      if (this.#ws !== ws) return;
      this.#lastFrameAt = Date.now();
      this.#events.emit("message", ev.data);
    };
    if (!this.#hooks.handshake) {
      ws.onopen = () => {
        if (this.#ws !== ws) return;
        this.opened();
        this.release();
      };
    }
    ws.onclose = (ev) => this.#ws === ws && this.#onClose(ev.code || ABNORMAL, ev.reason ?? "");
    // Must stay set: the `ws` package throws on an "error" event nobody listens to.
    ws.onerror = noop;
    this.#timers.connect = setTimeout(() => this.#abort("Connect timeout"), this.#connectTimeoutMs);
    this.#events.emit("socket", { url, attempt: this.#attempt });
  }

  /** Detaches the current socket and stops its timers; closes it when given a code. */
  #dropSocket(code?: number, reason?: string) {
    const ws = this.#ws;
    this.#ws = undefined;
    for (const t of Object.values(this.#timers)) clearTimeout(t);
    if (!ws || code === undefined) return;
    ws.onmessage = ws.onclose = noop;
    try {
      ws.close(code, reason);
    } catch { /* already closing */ }
  }

  /** Gives up on a socket that looks dead, as if it had closed abnormally. */
  #abort(reason: string) {
    this.#dropSocket(CLIENT_ABORT, reason);
    this.#onClose(ABNORMAL, reason);
  }

  #onClose(code: number, reason: string) {
    this.#dropSocket();
    if (this.#state === "closed") return;
    if (this.#openedAt && Date.now() - this.#openedAt >= STABLE_MS) this.#attempt = 0;
    this.#openedAt = 0;
    let disposition = closeDisposition(code, reason);
    disposition = this.#hooks.classifyClose?.(code, reason, disposition) ?? disposition;
    let { reconnect, error } = disposition;
    // A fixed token cannot be renewed: reconnecting would only be refused again.
    if (disposition.refreshToken && typeof this.#token !== "function") {
      [reconnect, error] = [false, "token_expired"];
    }
    const willReconnect = reconnect && this.#attempt < this.#policy.maxAttempts;
    this.#events.emit("close", { code, reason, willReconnect });
    if (this.#stopped()) return; // a listener called close()
    if (!willReconnect) {
      const err = new AgentError(
        error ?? "reconnect_failed",
        error
          ? `Connection closed (${code}${reason ? ` ${reason}` : ""})`
          : `Gave up after ${this.#attempt} reconnect attempts`,
        { retryable: error === undefined || error === "too_many_connections" },
      );
      this.#events.emit("error", err);
      return this.#stop(err);
    }
    const delayMs = backoffDelay(this.#attempt, this.#policy);
    this.#attempt++;
    this.#state = "reconnecting";
    this.#timers.retry = setTimeout(() => void this.#open(), delayMs);
    this.#events.emit("reconnecting", { attempt: this.#attempt, delayMs });
  }

  // A method, not an inline comparison: TypeScript cannot see that listeners change the state.
  #stopped(): boolean {
    return this.#state === "closed";
  }

  #stop(err: AgentError) {
    this.#dropSocket(CLOSE.normal, "Client stopped");
    this.#generation++;
    this.#state = "closed";
    this.#queue = [];
    this.#ready?.reject(err);
    this.#ready = undefined;
    this.#events.emit("stop", err);
  }

  #canSend(): boolean {
    return this.#state === "open" && !this.#held && this.#ws !== undefined;
  }

  #write(data: string) {
    // A send on a socket that is closing is lost silently; the layer above resends what the
    // server never answered.
    try {
      this.#ws?.send(data);
    } catch { /* the close handler takes it from here */ }
  }

  // -------------------------------------------------------------------------------------------
  // Heartbeat

  #heartbeatInterval(): number {
    return this.#heartbeat ? Math.min(this.#heartbeat.intervalMs, this.#heartbeatCapMs) : 0;
  }

  #scheduleHeartbeat(ms: number) {
    if (!this.#heartbeat) return;
    clearTimeout(this.#timers.heartbeat);
    this.#timers.heartbeat = setTimeout(() => this.#onHeartbeat(), Math.max(0, ms));
  }

  // One timer re-armed from timestamps instead of one reset per frame: streams are chatty.
  #onHeartbeat() {
    if (!this.#heartbeat || !this.#ws || !this.#hooks.probe) return;
    const now = Date.now();
    if (this.#probeSentAt && this.#lastFrameAt < this.#probeSentAt) {
      const left = this.#probeSentAt + this.#heartbeat.timeoutMs - now;
      return left <= 0 ? this.#abort("Heartbeat timeout") : this.#scheduleHeartbeat(left);
    }
    this.#probeSentAt = 0;
    const idle = now - this.#lastFrameAt;
    const interval = this.#heartbeatInterval();
    if (idle < interval) return this.#scheduleHeartbeat(interval - idle);
    this.#write(this.#hooks.probe());
    this.#probeSentAt = now;
    this.#scheduleHeartbeat(this.#heartbeat.timeoutMs);
  }
}
