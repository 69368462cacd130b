// supabase/functions/_shared/protocol/codes.ts
var SUBPROTOCOL = "agent-websocket.v1";
var TOKEN_SUBPROTOCOL_PREFIX = "jwt-";
var CLOSE = {
  /** Normal close, also "Session timeout" after inactivity. */
  normal: 1e3,
  /** No pong in time: the connection is dead. Reconnect and resume. */
  goingAway: 1001,
  /** The origin was refused, or the client broke the protocol. */
  policy: 1008,
  /** A frame above the hard size cap. */
  tooLarge: 1009,
  internal: 1011,
  /** The server is restarting or the connection reached its age: reconnect and resume. */
  restart: 1012,
  /** The client stopped reading; it may reconnect and resume later. */
  tryAgainLater: 1013,
  /** No valid token: reconnect only with a new one. */
  unauthorized: 4001,
  /** Another socket resumed the session; the client must not reconnect on its own. */
  takenOver: 4002,
  /** The access token expired while connected: fetch a fresh token, then resume. */
  tokenExpired: 4003,
  /** Too many connections for this user. */
  tooManyConnections: 4029
};

// client/backoff.ts
var DEFAULT_RECONNECT = Object.freeze({
  initialDelayMs: 250,
  maxDelayMs: 1e4,
  factor: 2,
  maxAttempts: Infinity
});
function resolveReconnect(opts) {
  if (opts === false) return {
    ...DEFAULT_RECONNECT,
    maxAttempts: 0
  };
  const p = {
    ...DEFAULT_RECONNECT
  };
  for (const key of Object.keys(p)) {
    const v = opts?.[key];
    if (typeof v === "number" && !Number.isNaN(v) && v >= 0) p[key] = v;
  }
  return p;
}
function backoffDelay(attempt, policy, random = Math.random) {
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.factor ** Math.max(0, attempt));
  return Math.floor(random() * Math.min(Number.isNaN(ceiling) ? 0 : ceiling, 2 ** 31 - 1));
}
function closeDisposition(code, reason) {
  switch (code) {
    case CLOSE.unauthorized:
      return {
        reconnect: false,
        error: "unauthorized"
      };
    case CLOSE.policy:
      return {
        reconnect: false,
        error: "policy_violation"
      };
    case CLOSE.tooManyConnections:
      return {
        reconnect: false,
        error: "too_many_connections"
      };
    case CLOSE.takenOver:
      return {
        reconnect: false,
        error: "session_taken_over"
      };
    case CLOSE.tokenExpired:
      return {
        reconnect: true,
        refreshToken: true
      };
    case CLOSE.normal:
      if (/session timeout/i.test(reason)) return {
        reconnect: false,
        error: "session_timeout"
      };
  }
  return {
    reconnect: true
  };
}
function isDuplicate(seq, lastSeq) {
  return typeof seq === "number" && seq > 0 && seq <= lastSeq;
}
function resumeUrl(url, sessionId, lastSeq) {
  const u = socketUrl(url);
  u.searchParams.set("session_id", sessionId);
  u.searchParams.set("last_seq", String(lastSeq));
  return u.toString();
}
function socketUrl(url) {
  const base = globalThis.location?.href;
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  return u;
}

// client/errors.ts
var AgentError = class _AgentError extends Error {
  name = "AgentError";
  /** Machine-readable code, e.g. `rate_limited` or `session_lost`. */
  code;
  /** Whether sending the same thing again can succeed. */
  retryable;
  retryAfterMs;
  /** Query or command id the error belongs to. */
  id;
  /** The server's frame, when the error came from one (carries `issues` for bad messages). */
  frame;
  constructor(code, message, opts = {}) {
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
   * import { AgentError } from "./errors.ts";
   * const err = AgentError.fromFrame({
   *   type: "error", seq: 3, timestamp: "", code: "rate_limited", message: "Slow down",
   *   retryable: true, retry_after_ms: 500,
   * });
   * console.log(err.retryAfterMs); // 500
   * ```
   */
  static fromFrame(f) {
    return new _AgentError(String(f.code), String(f.message ?? f.code), {
      retryable: f.retryable === true,
      retryAfterMs: typeof f.retry_after_ms === "number" ? f.retry_after_ms : void 0,
      id: typeof f.id === "string" ? f.id : void 0,
      frame: f
    });
  }
  /**
   * A copy attributed to one query or call (client-side errors are shared by all pending ones).
   *
   * @example
   * ```ts
   * import { AgentError } from "./errors.ts";
   * console.log(new AgentError("closed", "Closed").withId("q1").id); // "q1"
   * ```
   */
  withId(id) {
    return new _AgentError(this.code, this.message, {
      retryable: this.retryable,
      id
    });
  }
};

// client/conversation.ts
var CONVERSATION_NAME = /^[A-Za-z0-9_.:-]{1,128}$/;
function checkConversation(name) {
  if (typeof name !== "string" || !CONVERSATION_NAME.test(name)) {
    throw new AgentError("invalid_conversation", `Conversation name must be 1-128 of A-Z a-z 0-9 _ . : - (got ${JSON.stringify(name)})`);
  }
  return name;
}
function conversationUrl(url, name, lastSeq) {
  const u = socketUrl(url);
  u.searchParams.delete("session_id");
  u.searchParams.delete("last_seq");
  u.searchParams.set("conversation", name);
  if (lastSeq !== void 0) u.searchParams.set("last_seq", String(lastSeq));
  return u.toString();
}

// client/emitter.ts
var Emitter = class {
  // Listener<never> is the common supertype of every listener type.
  #listeners = /* @__PURE__ */ new Map();
  /**
   * Subscribes; returns the unsubscribe function.
   *
   * @example
   * ```ts
   * import { Emitter } from "./emitter.ts";
   * const off = new Emitter<{ x: number }>().on("x", console.log);
   * off();
   * ```
   */
  on(type, listener) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = /* @__PURE__ */ new Set());
    set.add(listener);
    return () => this.off(type, listener);
  }
  /**
   * Unsubscribes a listener added with {@linkcode Emitter.on}.
   *
   * @example
   * ```ts
   * import { Emitter } from "./emitter.ts";
   * const e = new Emitter<{ x: number }>();
   * e.on("x", console.log);
   * e.off("x", console.log);
   * ```
   */
  off(type, listener) {
    this.#listeners.get(type)?.delete(listener);
  }
  /**
   * Calls every listener of `type` with `event`, in subscription order.
   *
   * @example
   * ```ts
   * import { Emitter } from "./emitter.ts";
   * new Emitter<{ x: number }>().emit("x", 42);
   * ```
   */
  emit(type, event) {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const listener of [
      ...set
    ]) {
      try {
        listener(event);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
};

// client/stream.ts
var BufferedStream = class {
  #items = [];
  #ended = false;
  #error;
  #wakers = [];
  /**
   * Adds an item (ignored after {@linkcode BufferedStream.end}).
   *
   * @example
   * ```ts
   * import { BufferedStream } from "./stream.ts";
   * new BufferedStream<string>().push("delta");
   * ```
   */
  push(item) {
    if (this.#ended) return;
    this.#items.push(item);
    this.#wake();
  }
  /**
   * Ends the stream, with `error` thrown to readers when given. Only the first call counts.
   *
   * @example
   * ```ts
   * import { BufferedStream } from "./stream.ts";
   * new BufferedStream<string>().end();
   * ```
   */
  end(error) {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    this.#wake();
  }
  #wake() {
    for (const w of this.#wakers.splice(0)) w();
  }
  async *[Symbol.asyncIterator]() {
    for (let i = 0; ; ) {
      if (i < this.#items.length) yield this.#items[i++];
      else if (this.#ended) {
        if (this.#error !== void 0) throw this.#error;
        return;
      } else await new Promise((r) => this.#wakers.push(r));
    }
  }
};

// client/tools.ts
var REMEMBERED_CALLS = 1e3;
function declareTools(tools, names) {
  const out = [];
  for (const [name, t] of Object.entries(tools)) {
    if (names && !names.includes(name)) continue;
    const d = {
      name
    };
    if (t.description !== void 0) d.description = t.description;
    if (t.parameters !== void 0) d.parameters = t.parameters;
    if (t.needs_approval) d.needs_approval = true;
    out.push(d);
  }
  return out;
}
function remember(set, id) {
  set.add(id);
  if (set.size > REMEMBERED_CALLS) set.delete(set.values().next().value);
}
function errorMessage(e) {
  const text = e instanceof Error ? e.message : String(e);
  return text || "The tool failed";
}
var ToolRunner = class {
  #tools;
  #onApproval;
  #io;
  #seen = /* @__PURE__ */ new Set();
  #running = /* @__PURE__ */ new Map();
  #approvals = /* @__PURE__ */ new Map();
  #decided = /* @__PURE__ */ new Set();
  /**
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * new ToolRunner({}, () => true, { answer: console.log, requestApproval: console.log });
   * ```
   */
  constructor(tools, onApproval, io) {
    this.#tools = tools;
    this.#onApproval = onApproval;
    this.#io = io;
  }
  /**
   * Tool calls waiting for a decision, oldest first.
   *
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * const runner = new ToolRunner({}, undefined, { answer: console.log, requestApproval: console.log });
   * for (const r of runner.pendingApprovals) console.log(r.tool);
   * ```
   */
  get pendingApprovals() {
    return [
      ...this.#approvals.values()
    ];
  }
  /**
   * A `tool_call` of one of this client's queries arrived.
   *
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * const runner = new ToolRunner({}, undefined, { answer: console.log, requestApproval: console.log });
   * runner.onToolCall({
   *   type: "tool_call", seq: 5, timestamp: "", id: "q1", tool_call_id: "call_1", tool: "now",
   *   arguments: {}, iteration: 1, executor: "server", needs_approval: false,
   * });
   * ```
   */
  onToolCall(f) {
    if (this.#seen.has(f.tool_call_id)) return;
    remember(this.#seen, f.tool_call_id);
    if (f.needs_approval) return this.#askApproval(f);
    if (f.executor === "client") this.#run(f);
  }
  /**
   * The server's account of a call arrived: it is over (done, failed, denied or timed out), so
   * a run still going is aborted and a pending question withdrawn.
   *
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * const runner = new ToolRunner({}, undefined, { answer: console.log, requestApproval: console.log });
   * runner.settled("call_1");
   * ```
   */
  settled(toolCallId) {
    remember(this.#seen, toolCallId);
    remember(this.#decided, toolCallId);
    this.#approvals.delete(toolCallId);
    const run = this.#running.get(toolCallId);
    if (run) {
      this.#running.delete(toolCallId);
      run.abort.abort(new Error("The server no longer waits for this tool call"));
    }
  }
  /**
   * A human decided. For a client tool that was approved, the tool runs next.
   *
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * const runner = new ToolRunner({}, undefined, { answer: console.log, requestApproval: console.log });
   * runner.approve("q1", "call_1", false, "Not now");
   * ```
   */
  approve(queryId, toolCallId, approved, reason) {
    if (this.#decided.has(toolCallId)) return;
    remember(this.#decided, toolCallId);
    const request = this.#approvals.get(toolCallId);
    this.#approvals.delete(toolCallId);
    const frame = {
      type: "approval",
      id: queryId,
      tool_call_id: toolCallId,
      approved
    };
    if (reason !== void 0) frame.reason = reason;
    this.#io.answer(frame);
    if (approved && request?.executor === "client") this.#run(request.frame);
  }
  /**
   * The query ended: its runs are aborted and its questions withdrawn.
   *
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * const runner = new ToolRunner({}, undefined, { answer: console.log, requestApproval: console.log });
   * runner.endQuery("q1");
   * ```
   */
  endQuery(queryId) {
    for (const [id, r] of this.#approvals) if (r.queryId === queryId) this.#approvals.delete(id);
    for (const [id, run] of this.#running) {
      if (run.queryId !== queryId) continue;
      this.#running.delete(id);
      run.abort.abort(new Error("The query ended"));
    }
  }
  #askApproval(f) {
    const request = {
      queryId: f.id,
      toolCallId: f.tool_call_id,
      tool: f.tool,
      arguments: f.arguments ?? {},
      executor: f.executor,
      frame: f,
      approve: (approved, reason) => this.approve(f.id, f.tool_call_id, approved, reason)
    };
    this.#approvals.set(f.tool_call_id, request);
    const handler = this.#onApproval;
    if (!handler) return this.#io.requestApproval(request);
    Promise.resolve().then(() => handler(request)).then((d) => typeof d === "boolean" ? {
      approved: d
    } : d, (e) => ({
      approved: false,
      reason: `Approval failed: ${errorMessage(e)}`
    })).then((d) => {
      if (this.#approvals.get(f.tool_call_id) !== request) return;
      try {
        this.approve(f.id, f.tool_call_id, d?.approved === true, d?.reason);
      } catch {
      }
    });
  }
  async #run(f) {
    const abort = new AbortController();
    this.#running.set(f.tool_call_id, {
      queryId: f.id,
      abort
    });
    const answer = {
      type: "tool_result",
      id: f.id,
      tool_call_id: f.tool_call_id
    };
    try {
      const tool = Object.hasOwn(this.#tools, f.tool) ? this.#tools[f.tool] : void 0;
      if (!tool) throw new Error(`Unknown client tool "${f.tool}"`);
      const result = await tool.execute(f.arguments ?? {}, {
        signal: abort.signal,
        toolCallId: f.tool_call_id,
        queryId: f.id
      });
      answer.result = result === void 0 ? null : result;
      JSON.stringify(answer);
    } catch (e) {
      delete answer.result;
      answer.error = errorMessage(e);
    }
    if (abort.signal.aborted) return;
    this.#running.delete(f.tool_call_id);
    try {
      this.#io.answer(answer);
    } catch {
    }
  }
};

// client/transport.ts
var STABLE_MS = 3e3;
var CLIENT_ABORT = 4e3;
var ABNORMAL = 1006;
var noop = () => {
};
var ReconnectingTransport = class {
  #url;
  #WS;
  #token;
  #protocols;
  #policy;
  #connectTimeoutMs;
  #heartbeat;
  #maxQueue;
  #hooks;
  #events = new Emitter();
  #state = "idle";
  #ws;
  #generation = 0;
  #attempt = 0;
  #openedAt = 0;
  #held = false;
  #heartbeatCapMs = Infinity;
  #lastFrameAt = 0;
  #probeSentAt = 0;
  #timers = {};
  #queue = [];
  #ready;
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
  constructor(url, options = {}, hooks = {}) {
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (!WS) {
      throw new TypeError("No global WebSocket: pass one, e.g. { WebSocket } from the 'ws' package");
    }
    this.#url = url;
    this.#WS = WS;
    this.#token = options.token;
    this.#protocols = options.protocols ?? [];
    this.#policy = resolveReconnect(options.reconnect);
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 1e4;
    this.#heartbeat = options.heartbeat === false || !hooks.probe ? false : {
      intervalMs: options.heartbeat?.intervalMs ?? 15e3,
      timeoutMs: options.heartbeat?.timeoutMs ?? 1e4
    };
    this.#maxQueue = options.maxOfflineQueue ?? 100;
    this.#hooks = hooks;
  }
  /** @example `if (transport.state === "reconnecting") showBanner();` */
  get state() {
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
  on(type, listener) {
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
  connect() {
    if (this.#state === "open") return Promise.resolve();
    if (!this.#ready) {
      let resolve = noop, reject = noop;
      const promise = new Promise((res, rej) => [resolve, reject] = [
        res,
        rej
      ]);
      promise.catch(noop);
      this.#ready = {
        promise,
        resolve,
        reject
      };
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
  opened() {
    if (!this.#ws || this.#state === "closed") return;
    clearTimeout(this.#timers.connect);
    this.#openedAt = Date.now();
    this.#state = "open";
    this.#probeSentAt = 0;
    this.#scheduleHeartbeat(this.#heartbeatInterval());
    this.#ready?.resolve();
    this.#ready = void 0;
    this.#events.emit("open", void 0);
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
  release() {
    this.#held = false;
    while (this.#queue.length && this.#canSend()) {
      const { data, onSent } = this.#queue.shift();
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
  send(data, onSent) {
    if (this.#state === "closed") throw new AgentError("closed", "The client is closed");
    if (this.#canSend()) {
      this.#write(data);
      return onSent?.();
    }
    if (this.#queue.length >= this.#maxQueue) {
      throw new AgentError("offline_queue_full", `Offline queue is full (${this.#maxQueue} frames)`, {
        retryable: true
      });
    }
    this.#queue.push({
      data,
      onSent
    });
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
  write(data) {
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
  limitHeartbeat(ms) {
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
  close(code = CLOSE.normal, reason = "Client closed") {
    if (this.#state === "closed") return;
    const wasIdle = this.#state === "idle";
    this.#dropSocket(code, reason);
    this.#stop(new AgentError("closed", "The client was closed"));
    if (!wasIdle) this.#events.emit("close", {
      code,
      reason,
      willReconnect: false
    });
  }
  // -------------------------------------------------------------------------------------------
  // Connection lifecycle
  async #open() {
    const generation = ++this.#generation;
    let token;
    try {
      token = typeof this.#token === "function" ? await this.#token() : this.#token;
    } catch (e) {
      if (generation !== this.#generation || this.#state === "closed") return;
      this.#events.emit("error", new AgentError("token_error", `Token provider failed: ${e}`));
      return this.#onClose(CLIENT_ABORT, "Token provider failed");
    }
    if (generation !== this.#generation || this.#state === "closed") return;
    const protocols = token ? [
      ...this.#protocols,
      `${TOKEN_SUBPROTOCOL_PREFIX}${token}`
    ] : this.#protocols;
    const url = this.#hooks.url?.() ?? this.#url;
    let ws;
    try {
      ws = new this.#WS(url, protocols);
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
    ws.onerror = noop;
    this.#timers.connect = setTimeout(() => this.#abort("Connect timeout"), this.#connectTimeoutMs);
    this.#events.emit("socket", {
      url,
      attempt: this.#attempt
    });
  }
  /** Detaches the current socket and stops its timers; closes it when given a code. */
  #dropSocket(code, reason) {
    const ws = this.#ws;
    this.#ws = void 0;
    for (const t of Object.values(this.#timers)) clearTimeout(t);
    if (!ws || code === void 0) return;
    ws.onmessage = ws.onclose = noop;
    try {
      ws.close(code, reason);
    } catch {
    }
  }
  /** Gives up on a socket that looks dead, as if it had closed abnormally. */
  #abort(reason) {
    this.#dropSocket(CLIENT_ABORT, reason);
    this.#onClose(ABNORMAL, reason);
  }
  #onClose(code, reason) {
    this.#dropSocket();
    if (this.#state === "closed") return;
    if (this.#openedAt && Date.now() - this.#openedAt >= STABLE_MS) this.#attempt = 0;
    this.#openedAt = 0;
    let disposition = closeDisposition(code, reason);
    disposition = this.#hooks.classifyClose?.(code, reason, disposition) ?? disposition;
    let { reconnect, error } = disposition;
    if (disposition.refreshToken && typeof this.#token !== "function") {
      [reconnect, error] = [
        false,
        "token_expired"
      ];
    }
    const willReconnect = reconnect && this.#attempt < this.#policy.maxAttempts;
    this.#events.emit("close", {
      code,
      reason,
      willReconnect
    });
    if (this.#stopped()) return;
    if (!willReconnect) {
      const err = new AgentError(error ?? "reconnect_failed", error ? `Connection closed (${code}${reason ? ` ${reason}` : ""})` : `Gave up after ${this.#attempt} reconnect attempts`, {
        retryable: error === void 0 || error === "too_many_connections"
      });
      this.#events.emit("error", err);
      return this.#stop(err);
    }
    const delayMs = backoffDelay(this.#attempt, this.#policy);
    this.#attempt++;
    this.#state = "reconnecting";
    this.#timers.retry = setTimeout(() => void this.#open(), delayMs);
    this.#events.emit("reconnecting", {
      attempt: this.#attempt,
      delayMs
    });
  }
  // A method, not an inline comparison: TypeScript cannot see that listeners change the state.
  #stopped() {
    return this.#state === "closed";
  }
  #stop(err) {
    this.#dropSocket(CLOSE.normal, "Client stopped");
    this.#generation++;
    this.#state = "closed";
    this.#queue = [];
    this.#ready?.reject(err);
    this.#ready = void 0;
    this.#events.emit("stop", err);
  }
  #canSend() {
    return this.#state === "open" && !this.#held && this.#ws !== void 0;
  }
  #write(data) {
    try {
      this.#ws?.send(data);
    } catch {
    }
  }
  // -------------------------------------------------------------------------------------------
  // Heartbeat
  #heartbeatInterval() {
    return this.#heartbeat ? Math.min(this.#heartbeat.intervalMs, this.#heartbeatCapMs) : 0;
  }
  #scheduleHeartbeat(ms) {
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
};

// client/agent_client.ts
var REPLAY_GRACE_MS = 2e3;
var MAX_RESENDS = 2;
var OWN_SOCKETS = 16;
var OWN_QUERIES = 256;
function uuid() {
  const c = globalThis.crypto;
  if (typeof c?.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (typeof c?.getRandomValues === "function") c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = b[6] & 15 | 64;
  b[8] = b[8] & 63 | 128;
  const h2 = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h2.slice(0, 8)}-${h2.slice(8, 12)}-${h2.slice(12, 16)}-${h2.slice(16, 20)}-${h2.slice(20)}`;
}
function remember2(set, id, max) {
  set.delete(id);
  set.add(id);
  if (set.size > max) set.delete(set.values().next().value);
}
function conversationInUrl(url) {
  try {
    return new URL(url, "ws://relative.invalid").searchParams.get("conversation") ?? void 0;
  } catch {
    return void 0;
  }
}
var noop2 = () => {
};
var textDecoder = new TextDecoder();
var textEncoder = new TextEncoder();
var AgentClient = class {
  #url;
  #transport;
  #events = new Emitter();
  #tools;
  #runner;
  #sessionId;
  #lastSeq = 0;
  #handshaken = false;
  #sessionEnded = false;
  #replayLeft = 0;
  #replayTimer;
  #limits = {};
  #features = [];
  #conversation;
  /** Whether this client has been in its conversation, so the next socket resumes it. */
  #joined = false;
  #socketId;
  #ownSockets = /* @__PURE__ */ new Set();
  #sockets;
  #ownQueries = /* @__PURE__ */ new Set();
  #asks = /* @__PURE__ */ new Map();
  #calls = /* @__PURE__ */ new Set();
  /** Keyed by `<type>:<tool_call_id>`. */
  #answers = /* @__PURE__ */ new Map();
  /**
   * Creates a client; nothing happens on the network until {@link connect}.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * // Node 20: pass `{ WebSocket }` from the "ws" package.
   * const client = new AgentClient("ws://127.0.0.1:8000", { reconnect: { maxAttempts: 5 } });
   * ```
   */
  constructor(url, options = {}) {
    this.#url = url;
    const named = options.conversation ?? conversationInUrl(url);
    if (named !== void 0) this.#conversation = checkConversation(named);
    this.#tools = options.tools ?? {};
    this.#runner = new ToolRunner(this.#tools, options.onApproval, {
      answer: (frame) => this.#answer(frame),
      requestApproval: (request) => this.#events.emit("approval", request)
    });
    const protocols = [
      SUBPROTOCOL,
      ...(options.protocols ?? []).filter((p) => p !== SUBPROTOCOL)
    ];
    this.#transport = new ReconnectingTransport(url, {
      ...options,
      protocols
    }, {
      handshake: true,
      url: () => this.#socketUrl(),
      probe: () => JSON.stringify({
        type: "ping",
        id: `heartbeat-${uuid()}`
      }),
      classifyClose: (code, _reason, disposition) => {
        if (code === CLOSE.tooLarge) {
          this.#failSent(new AgentError("message_too_large", "Frame too large for the server"), true);
        }
        return this.#sessionEnded ? {
          reconnect: false,
          error: "session_timeout"
        } : disposition;
      }
    });
    const t = this.#transport;
    t.on("socket", () => this.#resetSocket());
    t.on("message", (data) => this.#onMessage(data));
    t.on("close", (e) => (this.#resetSocket(), this.#events.emit("close", e)));
    t.on("reconnecting", (e) => this.#events.emit("reconnecting", e));
    t.on("error", (e) => this.#events.emit("error", e));
    t.on("stop", (e) => this.#onStop(e));
  }
  /** @example `if (client.state === "reconnecting") showBanner();` */
  get state() {
    return this.#transport.state;
  }
  /** @example `localStorage.sessionId = client.sessionId;` */
  get sessionId() {
    return this.#sessionId;
  }
  /**
   * The conversation this client is in (the `conversation` option), if any.
   *
   * @example `document.title = client.conversation ?? "chat";`
   */
  get conversation() {
    return this.#conversation;
  }
  /**
   * The id the server gave this socket in a conversation (new for every socket, so it changes
   * on reconnect); frames whose `socket` names another id are for another socket.
   *
   * @example `console.log(client.socketId);`
   */
  get socketId() {
    return this.#socketId;
  }
  /**
   * How many sockets are in the conversation, this one included, as the last `presence`
   * notification said; undefined before one arrived.
   *
   * @example `badge.textContent = String(client.sockets ?? 1);`
   */
  get sockets() {
    return this.#sockets;
  }
  /** Highest `seq` delivered so far. @example `console.log(client.lastSeq);` */
  get lastSeq() {
    return this.#lastSeq;
  }
  /**
   * Features the server announced in `connected` (v1.1), e.g. `tools`, `client_tools`.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * client.on("open", () => {
   *   if (!client.features.includes("client_tools")) console.warn("tools will not be called");
   * });
   * ```
   */
  get features() {
    return this.#features;
  }
  /**
   * Tool calls of this client's queries waiting for {@linkcode approve}, oldest first.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * for (const r of client.pendingApprovals) r.approve(true);
   * ```
   */
  get pendingApprovals() {
    return this.#runner.pendingApprovals;
  }
  /**
   * Subscribes to an event; returns the unsubscribe function.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * const off = client.on("reconnecting", ({ attempt, delayMs }) => console.log(attempt, delayMs));
   * off();
   * ```
   */
  on(type, listener) {
    return this.#events.on(type, listener);
  }
  /**
   * Removes a listener added with {@link on}.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * const onStatus = () => {};
   * client.on("status", onStatus);
   * client.off("status", onStatus);
   * ```
   */
  off(type, listener) {
    this.#events.off(type, listener);
  }
  /**
   * Opens the connection. Resolves on the first `connected` or `resumed`; failed attempts are
   * retried per the reconnect policy, and it rejects only when the client stops (terminal
   * close code, attempts exhausted, or {@link close}). Calling it again is harmless, and after
   * `close()` it starts over (resuming the session when the server still has it).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   await client.connect();
   * }
   * ```
   */
  connect() {
    return this.#transport.connect();
  }
  /**
   * Sends a query. While disconnected (or before {@link connect}) it waits in the offline
   * queue, bounded by `maxOfflineQueue`; a full queue rejects `response` with
   * `offline_queue_full`. Registered client tools are declared with it.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const h = client.ask("Write a haiku", { model: "gpt-4o-mini" });
   *   for await (const d of h.deltas) Deno.stdout.writeSync(new TextEncoder().encode(d));
   *   const { usage, timing } = await h.response;
   * }
   * ```
   */
  ask(content, options = {}) {
    const id = options.id ?? uuid();
    const frame = {
      type: "query",
      id,
      content
    };
    if (options.model !== void 0) frame.model = options.model;
    if (options.stream !== void 0) frame.stream = options.stream;
    if (options.metadata !== void 0) frame.metadata = options.metadata;
    if (options.tools !== false) {
      const tools = declareTools(this.#tools, options.tools);
      if (tools.length) frame.tools = tools;
    }
    const deltas = new BufferedStream();
    const reasoning = new BufferedStream();
    const events = new BufferedStream();
    const end = (e) => {
      for (const s of [
        deltas,
        reasoning,
        events
      ]) s.end(e);
      this.#runner.endQuery(id);
      for (const [key, a] of this.#answers) if (a.frame.id === id) this.#answers.delete(key);
    };
    let resolve = noop2, reject = noop2;
    const response = new Promise((res, rej) => [resolve, reject] = [
      res,
      rej
    ]);
    response.catch(noop2);
    const ask2 = {
      frame,
      sent: false,
      acked: false,
      resends: 0,
      deltas,
      reasoning,
      events,
      streamed: false,
      resolve: (r) => (end(), resolve(r)),
      fail: (e) => (end(e), reject(e))
    };
    const handle = {
      id,
      deltas,
      reasoning,
      events,
      response,
      // The answer already tells how the query ended, so a cancel that lost the race with the
      // end of the query is not an error worth an unhandled rejection.
      cancel: () => this.#asks.has(id) ? this.cancel(id).then(noop2, noop2) : Promise.resolve(),
      approve: (toolCallId, approved, reason) => this.approve(id, toolCallId, approved, reason)
    };
    try {
      if (this.#asks.has(id)) throw new AgentError("duplicate_id", `Query ${id} is in progress`);
      this.#checkLimits(frame);
      this.#asks.set(id, ask2);
      remember2(this.#ownQueries, id, OWN_QUERIES);
      this.#transport.send(JSON.stringify(frame), () => ask2.sent = true);
    } catch (e) {
      if (this.#asks.get(id) === ask2) this.#asks.delete(id);
      ask2.fail(e instanceof AgentError ? e : new AgentError("internal_error", String(e)));
    }
    return handle;
  }
  /**
   * Decides on a tool call that needs approval (an `approval` frame). For a client tool that
   * is approved, the tool then runs and its result is sent. Throws `AgentError` `closed` after
   * the client stopped.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * client.on("approval", (r) => client.approve(r.queryId, r.toolCallId, r.tool === "get_weather"));
   * ```
   */
  approve(queryId, toolCallId, approved, reason) {
    this.#runner.approve(queryId, toolCallId, approved, reason);
  }
  /**
   * Sends a command and resolves with the `notification` answering it (matched by id).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const n = await client.command("stats");
   * }
   * ```
   */
  command(name, args) {
    const id = uuid();
    const frame = {
      type: "command",
      name,
      id
    };
    if (args) frame.args = args;
    return this.#call(id, frame, (f) => f.type === "notification");
  }
  /**
   * Cancels query `id`, or the one in flight when omitted.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const handle = client.ask("A long story");
   *   await client.cancel(handle.id);
   * }
   * ```
   */
  cancel(id) {
    return this.command("cancel", id === void 0 ? void 0 : {
      id
    });
  }
  /**
   * Clears the conversation history kept by the server.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   await client.reset();
   * }
   * ```
   */
  reset() {
    return this.command("reset");
  }
  /**
   * Fetches the conversation history (a `history` notification).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const n = await client.history();
   *   console.log(n.messages ?? n.content);
   * }
   * ```
   */
  history() {
    return this.command("history");
  }
  /**
   * Fetches session statistics (a `stats` notification).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   console.log(await client.stats());
   * }
   * ```
   */
  stats() {
    return this.command("stats");
  }
  /**
   * Lists the user's conversations, newest first (the `conversations` command; v1.1).
   * Rejects with the server's `AgentError`, e.g. `unknown_command` on a server without memory.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const { conversations } = await client.conversations();
   *   for (const c of conversations) console.log(c.name, c.messages, c.updated_at);
   * }
   * ```
   */
  conversations() {
    return this.#memoryCommand("conversations", "conversations");
  }
  /**
   * Searches what was said in all the user's conversations, best hits first (the
   * `search_memory` command; v1.1).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const { results } = await client.searchMemory("flight to Lisbon", { limit: 5 });
   *   for (const r of results) console.log(r.conversation, r.role, r.content, r.score);
   * }
   * ```
   */
  searchMemory(query, options = {}) {
    const args = {
      query
    };
    if (options.limit !== void 0) args.limit = options.limit;
    return this.#memoryCommand("search_memory", "search_memory", args);
  }
  /**
   * Forgets the history of one conversation, or of all the user's conversations when none is
   * named (the `clear_memory` command; v1.1). `cleared` says how many conversations were emptied;
   * they stay, empty, and can go on.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const { cleared } = await client.clearMemory("old-trip");
   *   console.log(`${cleared} conversation emptied`);
   * }
   * ```
   */
  clearMemory(conversation) {
    let args;
    try {
      if (conversation !== void 0) args = {
        conversation: checkConversation(conversation)
      };
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#memoryCommand("clear_memory", "memory_cleared", args);
  }
  /**
   * Whether query `id` was sent by this client (in flight or among its recent ones). In a
   * conversation, events also carry the queries other sockets sent; this tells them apart.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000", { conversation: "team" });
   * client.on("response", (r) => {
   *   if (r.done && !client.isOwnQuery(r.id)) console.log("another tab got:", r.content);
   * });
   * ```
   */
  isOwnQuery(id) {
    return this.#asks.has(id) || this.#ownQueries.has(id);
  }
  /**
   * Rates a response; resolves with the `feedback_received` notification.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const handle = client.ask("Hi");
   *   await handle.response;
   *   await client.feedback(handle.id, "up", "Spot on");
   * }
   * ```
   */
  feedback(id, rating, comment) {
    const frame = {
      type: "feedback",
      id,
      rating
    };
    if (comment !== void 0) frame.comment = comment;
    return this.#call(id, frame, (f) => f.type === "notification" && f.event === "feedback_received");
  }
  /**
   * Measures the round trip in ms (from the moment the ping is written to the socket).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   console.log(`${await client.ping()} ms`);
   * }
   * ```
   */
  ping() {
    const id = uuid();
    let t0 = 0;
    return this.#call(id, {
      type: "ping",
      id
    }, (f) => f.type === "pong", () => t0 = performance.now()).then(() => performance.now() - t0);
  }
  /**
   * Sends a raw frame now, or queues it while disconnected. Throws `AgentError`
   * `offline_queue_full` past `maxOfflineQueue`, and `closed` after the client stopped.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * client.send({ type: "feedback", id: "q1", rating: "down" }); // queued until connected
   * ```
   */
  send(frame) {
    this.#transport.send(JSON.stringify(frame));
  }
  /**
   * Closes for good: no reconnect; pending queries and calls reject with `closed`.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * client.close();
   * ```
   */
  close(code = CLOSE.normal, reason = "Client closed") {
    this.#transport.close(code, reason);
  }
  // -------------------------------------------------------------------------------------------
  // Connection lifecycle
  /** The URL of the next socket: a join or resume of the conversation, or of the session. */
  #socketUrl() {
    if (this.#conversation !== void 0) {
      return conversationUrl(this.#url, this.#conversation, this.#joined ? this.#lastSeq : void 0);
    }
    return this.#sessionId ? resumeUrl(this.#url, this.#sessionId, this.#lastSeq) : this.#url;
  }
  /** A socket went away or a new one is opening: its handshake and replay start over. */
  #resetSocket() {
    this.#handshaken = false;
    this.#replayLeft = 0;
    clearTimeout(this.#replayTimer);
  }
  #onStop(err) {
    this.#resetSocket();
    this.#sessionEnded = false;
    if (err.code === "session_timeout") [this.#sessionId, this.#joined] = [
      void 0,
      false
    ];
    const pending = [
      ...this.#asks.values(),
      ...this.#calls
    ];
    this.#asks.clear();
    this.#calls.clear();
    this.#answers.clear();
    for (const p of pending) p.fail(err.withId(p.frame.id));
  }
  // -------------------------------------------------------------------------------------------
  // Incoming frames
  #onMessage(data) {
    let f;
    try {
      const text = typeof data === "string" ? data : textDecoder.decode(data);
      f = JSON.parse(text);
    } catch {
      return;
    }
    if (!f || typeof f !== "object" || typeof f.type !== "string") return;
    if (this.#handshaken) return this.#accept(f);
    if (f.type === "notification" && (f.event === "connected" || f.event === "resumed")) {
      return this.#onHandshake(f);
    }
    if (f.type === "error") this.#dispatch(f);
    else this.#accept(f);
  }
  #onHandshake(f) {
    const resumed = f.event === "resumed";
    const previous = this.#sessionId;
    const sessionId = typeof f.session_id === "string" ? f.session_id : previous ?? "";
    const replayed = resumed ? Math.max(0, Number(f.replayed) || 0) : 0;
    if (!resumed) {
      this.#lastSeq = typeof f.seq === "number" ? f.seq : 0;
      this.#sessionEnded = false;
      if (f.limits && typeof f.limits === "object") {
        this.#limits = f.limits;
      }
      if (Array.isArray(f.features)) this.#features = f.features.map(String);
      if (typeof f.heartbeat_ms === "number") this.#transport.limitHeartbeat(f.heartbeat_ms);
    }
    this.#sessionId = sessionId;
    const socketId = typeof f.socket_id === "string" ? f.socket_id : typeof f.socket === "string" ? f.socket : void 0;
    this.#socketId = socketId;
    if (socketId !== void 0) remember2(this.#ownSockets, socketId, OWN_SOCKETS);
    if (typeof f.sockets === "number") this.#sockets = f.sockets;
    const wasJoined = this.#joined;
    if (this.#conversation !== void 0) this.#joined = true;
    this.#handshaken = true;
    this.#replayLeft = replayed;
    this.#transport.opened();
    if (replayed) this.#replayTimer = setTimeout(() => this.#afterReplay(), REPLAY_GRACE_MS);
    const lost = !resumed && (previous !== void 0 || wasJoined);
    if (lost || sessionId !== previous) {
      this.#events.emit("session", {
        sessionId,
        previousSessionId: previous,
        lost
      });
    }
    if (lost) {
      const why = wasJoined ? `Frames of conversation ${this.#conversation} were missed; what was in flight is given up` : `Session ${previous} expired; a new session started`;
      this.#failSent(new AgentError("session_lost", why, {
        retryable: true
      }));
    }
    if (this.#open()) this.#dispatch(f);
    if (this.#open()) {
      const open = {
        sessionId,
        resumed,
        replayed
      };
      if (this.#conversation !== void 0) {
        Object.assign(open, {
          socketId,
          conversation: this.#conversation
        });
      }
      this.#events.emit("open", open);
    }
    if (!replayed) this.#afterReplay();
  }
  // A method, not an inline comparison: TypeScript cannot see that listeners change the state.
  #open() {
    return this.#transport.state === "open";
  }
  #accept(f) {
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
    clearTimeout(this.#replayTimer);
    if (!this.#open()) return;
    this.#replayLeft = 0;
    for (const p of [
      ...this.#asks.values(),
      ...this.#calls,
      ...this.#answers.values()
    ]) {
      if (!p.sent || p.acked) continue;
      if (++p.resends <= MAX_RESENDS) {
        this.#transport.write(JSON.stringify(p.frame));
        continue;
      }
      const id = p.frame.id;
      if (id !== void 0 && this.#asks.get(id) === p) this.#asks.delete(id);
      this.#calls.delete(p);
      for (const [key, a] of this.#answers) if (a === p) this.#answers.delete(key);
      const why = "The connection kept dropping before the server answered";
      p.fail(new AgentError("delivery_failed", why, {
        retryable: true,
        id
      }));
    }
    this.#transport.release();
  }
  #dispatch(f) {
    this.#events.emit("frame", f);
    if (typeof f.socket === "string" && !this.#ownSockets.has(f.socket)) return;
    const id = typeof f.id === "string" ? f.id : void 0;
    const ask2 = id === void 0 ? void 0 : this.#asks.get(id);
    if (ask2) ask2.acked = true;
    switch (f.type) {
      case "notification":
        if (f.event === "session_timeout") this.#sessionEnded = true;
        if (f.event === "presence" && typeof f.sockets === "number") this.#sockets = f.sockets;
        this.#events.emit("notification", f);
        if (f.event === "presence") this.#events.emit("presence", f);
        return this.#settleCall(f);
      case "status":
        ask2?.events.push(f);
        return this.#events.emit("status", f);
      case "pong":
        this.#events.emit("pong", f);
        return this.#settleCall(f);
      case "reasoning": {
        const r = f;
        this.#events.emit("reasoning", r);
        if (ask2 && typeof r.delta === "string") {
          ask2.reasoning.push(r.delta);
          ask2.events.push(r);
        }
        return;
      }
      case "tool_call": {
        const call = f;
        this.#events.emit("tool_call", call);
        if (!ask2 || typeof call.tool_call_id !== "string") return;
        ask2.events.push(call);
        return this.#runner.onToolCall(call);
      }
      case "tool_result": {
        const result = f;
        if (typeof result.tool_call_id !== "string") return;
        this.#settleAnswers(result.tool_call_id);
        this.#runner.settled(result.tool_call_id);
        this.#events.emit("tool_result", result);
        return ask2?.events.push(result);
      }
      case "error": {
        const toolCallId = typeof f.tool_call_id === "string" ? f.tool_call_id : void 0;
        if (id === void 0 && toolCallId && this.#settleAnswers(toolCallId)) return;
        const err = AgentError.fromFrame(f);
        this.#events.emit("error", err);
        if (ask2) {
          this.#asks.delete(id);
          return ask2.fail(err);
        }
        const call = id === void 0 ? void 0 : this.#findCall(id);
        if (call) {
          this.#calls.delete(call);
          call.fail(err);
        }
        return;
      }
      case "response": {
        const r = f;
        this.#events.emit("response", r);
        if (!ask2) return;
        ask2.events.push(r);
        if (typeof r.delta === "string" && r.delta) {
          ask2.deltas.push(r.delta);
          ask2.streamed = true;
        }
        if (r.done !== true) return;
        if (!ask2.streamed && typeof r.content === "string" && r.content) ask2.deltas.push(r.content);
        this.#asks.delete(id);
        ask2.resolve(r);
      }
    }
  }
  #findCall(id) {
    for (const c of this.#calls) if (c.id === id) return c;
  }
  #settleCall(f) {
    const id = typeof f.id === "string" ? f.id : void 0;
    for (const c of this.#calls) {
      if ((id === void 0 ? c.frame.type === "feedback" : c.id === id) && c.matches(f)) {
        this.#calls.delete(c);
        return c.resolve(f);
      }
    }
  }
  /** The server has the answers about `toolCallId`; returns whether any was resent. */
  #settleAnswers(toolCallId) {
    let resent = false;
    for (const type of [
      "tool_result",
      "approval"
    ]) {
      const a = this.#answers.get(`${type}:${toolCallId}`);
      if (!a) continue;
      resent ||= a.resends > 0;
      this.#answers.delete(`${type}:${toolCallId}`);
    }
    return resent;
  }
  // -------------------------------------------------------------------------------------------
  // Outgoing frames
  #call(id, frame, matches, onSent) {
    return new Promise((resolve, fail) => {
      const settle = resolve;
      const call = {
        id,
        frame,
        sent: false,
        acked: false,
        resends: 0,
        matches,
        fail,
        resolve: settle
      };
      this.#transport.send(JSON.stringify(frame), () => (call.sent = true, onSent?.()));
      this.#calls.add(call);
    });
  }
  /** A command whose answer is the notification `event`; any other answer is an error. */
  async #memoryCommand(name, event, args) {
    const n = await this.command(name, args);
    if (n.event !== event) {
      throw new AgentError("unexpected_answer", `Expected ${event}, got ${n.event}`, {
        id: n.id
      });
    }
    return n;
  }
  /** Sends a tool answer, kept until the server's `tool_result` for the call confirms it. */
  #answer(frame) {
    const answer = {
      frame,
      sent: false,
      acked: false,
      resends: 0,
      fail: noop2
    };
    this.#transport.send(JSON.stringify(frame), () => answer.sent = true);
    if (this.#asks.has(frame.id)) this.#answers.set(`${frame.type}:${frame.tool_call_id}`, answer);
  }
  /** Rejects what the server may have had; frames never sent stay queued for the next session. */
  #failSent(err, unackedOnly = false) {
    for (const [id, ask2] of this.#asks) {
      if (ask2.sent && !(unackedOnly && ask2.acked)) {
        this.#asks.delete(id);
        ask2.fail(err.withId(id));
      }
    }
    for (const c of this.#calls) {
      if (c.sent && !(unackedOnly && c.acked)) {
        this.#calls.delete(c);
        c.fail(err);
      }
    }
    for (const [key, a] of this.#answers) if (a.sent) this.#answers.delete(key);
  }
  /** Rejects a query the server would refuse for size, rather than risk a 1009 close. */
  #checkLimits(frame) {
    const maxChars = this.#limits.max_content_chars;
    const maxBytes = this.#limits.max_message_bytes;
    const tooLong = typeof maxChars === "number" && frame.content.length > maxChars;
    if (tooLong || typeof maxBytes === "number" && textEncoder.encode(JSON.stringify(frame)).length > maxBytes) {
      throw new AgentError("message_too_large", "Query exceeds the server's size limits", {
        id: frame.id
      });
    }
  }
};

// supabase/functions/agent_websocket/page/app.ts
function $(role) {
  const el = document.querySelector(`[data-role="${role}"]`);
  if (!el) throw new Error(`missing [data-role="${role}"]`);
  return el;
}
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else el.setAttribute(k, v);
  }
  el.append(...children);
  return el;
}
var ui = {
  agent: $("agent"),
  model: $("model"),
  simulator: $("simulator"),
  state: $("state"),
  settings: $("settings"),
  connection: $("connection"),
  url: $("url"),
  conversation: $("conversation"),
  token: $("token"),
  scroller: $("scroller"),
  log: $("log"),
  hint: $("hint"),
  status: $("status"),
  composer: $("composer"),
  prompt: $("prompt"),
  cancel: $("cancel"),
  send: $("send")
};
var TOKEN_KEY = "agent_websocket.token";
function servedFrom() {
  if (location.protocol !== "http:" && location.protocol !== "https:") return "";
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${location.pathname}`;
}
function loadSettings() {
  const params = new URLSearchParams(location.search);
  ui.url.value = params.get("url") ?? servedFrom();
  ui.conversation.value = params.get("conversation") ?? "";
  ui.token.value = sessionStorage.getItem(TOKEN_KEY) ?? "";
  if (!ui.url.value) ui.settings.open = true;
}
function conversationName(typed) {
  return typed.trim().replace(/[^A-Za-z0-9_.:-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 128);
}
function saveSettings() {
  const params = new URLSearchParams(location.search);
  const set = (name, value) => value ? params.set(name, value) : params.delete(name);
  set("url", ui.url.value.trim() === servedFrom() ? "" : ui.url.value.trim());
  ui.conversation.value = conversationName(ui.conversation.value);
  set("conversation", ui.conversation.value);
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
  if (ui.token.value.trim()) sessionStorage.setItem(TOKEN_KEY, ui.token.value.trim());
  else sessionStorage.removeItem(TOKEN_KEY);
}
var client;
function setState(state, label = state) {
  ui.state.dataset.state = state;
  ui.state.textContent = label;
  ui.send.disabled = !client;
}
function setStatus(text) {
  ui.status.textContent = text;
}
function connect() {
  client?.close();
  client = void 0;
  for (const view of answers.values()) view.fail(new Error("Disconnected"));
  answers.clear();
  ui.log.replaceChildren(ui.hint);
  ui.hint.hidden = false;
  const base = ui.url.value.trim();
  if (!base) {
    setState("closed", "no server");
    ui.hint.textContent = "Opened from a file: add ?url=wss://<project-ref>.supabase.co/functions/v1/agent_websocket to the address, or fill in the server URL under Connection.";
    return;
  }
  let url;
  try {
    url = new URL(base);
  } catch {
    setState("closed", "bad URL");
    setStatus(`Not a URL: ${base}`);
    return;
  }
  const conversation = conversationName(ui.conversation.value);
  if (conversation) url.searchParams.set("conversation", conversation);
  const token = ui.token.value.trim();
  const c = new AgentClient(url.toString(), token ? {
    token
  } : {});
  client = c;
  const mine = (fn) => (e) => c === client && fn(e);
  c.on("open", mine(({ resumed, replayed }) => {
    setState("open", "connected");
    setStatus(resumed ? `Resumed the session (${replayed} frames caught up)` : "Connected");
  }));
  c.on("close", mine(({ code, reason, willReconnect }) => {
    if (willReconnect) setState("reconnecting", "reconnecting\u2026");
    else {
      setState("closed", "disconnected");
      setStatus(`Disconnected (${code}${reason ? `: ${reason}` : ""})`);
    }
  }));
  c.on("reconnecting", mine(({ attempt, delayMs }) => {
    setState("reconnecting", "reconnecting\u2026");
    setStatus(`Connection lost; attempt ${attempt} in ${(delayMs / 1e3).toFixed(1)} s`);
  }));
  c.on("session", mine(({ lost }) => {
    if (!lost) return;
    ui.log.append(h("div", {
      class: "divider",
      "data-role": "notice"
    }, "new session: the server no longer had the old one"));
  }));
  c.on("notification", mine((f) => {
    if (f.event === "connected") {
      ui.agent.textContent = typeof f.agent === "string" ? f.agent : "agent_websocket";
      ui.model.textContent = typeof f.model === "string" ? f.model : "";
      ui.simulator.hidden = f.simulator !== true;
    } else if (f.event === "shutdown") setStatus("The server is restarting\u2026");
    else if (f.event === "session_timeout") setStatus("Session closed after inactivity");
  }));
  c.on("status", mine((f) => {
    if (!answers.has(f.id) && !c.isOwnQuery(f.id) && typeof f.question === "string") {
      showTheirs(f.id, f.question, () => c.cancel(f.id));
    }
    answers.get(f.id)?.status(f);
  }));
  c.on("frame", mine((f) => {
    if (f.type === "tool_call") answers.get(f.id)?.toolCall(f);
    else if (f.type === "tool_result") answers.get(f.id)?.toolResult(f);
    else if (typeof f.id === "string" && theirs.has(f.id)) theirFrame(f);
  }));
  c.on("error", mine((err) => {
    if (err.id === void 0 || !answers.has(err.id)) setStatus(`${err.code}: ${err.message}`);
  }));
  setState("connecting", "connecting\u2026");
  c.connect().catch(mine((err) => {
    setState("closed", "disconnected");
    setStatus(err instanceof Error ? err.message : String(err));
  }));
}
var AnswerView = class {
  handle;
  /** The whole message: tool calls, the answer, and its status line. */
  el;
  /** `data-role="answer"`: the answer's text and nothing else; `data-state` says where it is. */
  #answer;
  #tools;
  #meta;
  #toolViews;
  constructor(handle) {
    this.handle = handle;
    this.#tools = h("div", {
      class: "tools"
    });
    this.#meta = h("div", {
      class: "meta"
    }, "sending\u2026");
    this.#toolViews = /* @__PURE__ */ new Map();
    this.#answer = h("div", {
      class: "bubble",
      "data-role": "answer",
      "data-id": handle.id,
      "data-state": "streaming"
    });
    this.el = h("article", {
      class: "msg agent"
    }, this.#tools, this.#answer, this.#meta);
  }
  get running() {
    return this.#answer.dataset.state === "streaming";
  }
  append(delta) {
    if (this.#answer.textContent === "") {
      this.#meta.textContent = "writing\u2026";
      setStatus("writing\u2026");
    }
    this.#answer.append(delta);
  }
  status(f) {
    if (!this.running) return;
    const text = f.state === "queued" ? `queued${f.position ? ` (position ${f.position})` : ""}` : f.state === "retrying" ? `retrying${f.delay_ms ? ` in ${(f.delay_ms / 1e3).toFixed(1)} s` : ""}` + (f.attempt ? ` (attempt ${f.attempt})` : "") : f.state === "thinking" ? "thinking\u2026" : f.state;
    this.#meta.textContent = text;
    setStatus(text);
  }
  toolCall(f) {
    const state = h("span", {}, f.needs_approval ? "waiting for your approval" : "running\u2026");
    const card = h("div", {
      class: "tool",
      "data-role": "tool",
      "data-tool-call-id": f.tool_call_id
    }, h("div", {
      class: "tool-head"
    }, h("b", {}, f.tool), state), h("pre", {}, JSON.stringify(f.arguments, null, 2)));
    if (f.needs_approval) {
      const decide = (approved) => {
        for (const b of actions.querySelectorAll("button")) b.disabled = true;
        state.textContent = approved ? "approved, running\u2026" : "denied";
        try {
          client?.send({
            type: "approval",
            id: f.id,
            tool_call_id: f.tool_call_id,
            approved
          });
        } catch (err) {
          state.textContent = `not sent: ${err instanceof Error ? err.message : err}`;
        }
      };
      const approve = h("button", {
        type: "button",
        "data-role": "approve"
      }, "Approve");
      const deny = h("button", {
        type: "button",
        class: "deny",
        "data-role": "deny"
      }, "Deny");
      approve.addEventListener("click", () => decide(true));
      deny.addEventListener("click", () => decide(false));
      const actions = h("div", {
        class: "tool-actions"
      }, approve, deny);
      card.append(actions);
    }
    this.#toolViews.set(f.tool_call_id, card);
    this.#tools.append(card);
    this.#meta.textContent = `calling ${f.tool}\u2026`;
  }
  toolResult(f) {
    const card = this.#toolViews.get(f.tool_call_id);
    if (!card) return;
    card.dataset.state = f.ok ? "ok" : "failed";
    card.querySelector(".tool-actions")?.remove();
    const head = card.querySelector(".tool-head span");
    if (head) head.textContent = `${f.ok ? "done" : "failed"} in ${f.duration_ms} ms`;
    const body = f.ok ? JSON.stringify(f.result, null, 2) ?? "" : f.error ?? "failed";
    card.append(h("pre", {}, body.length > 4e3 ? `${body.slice(0, 4e3)}\u2026` : body));
  }
  finish(r) {
    const cancelled = r.finish_reason === "cancelled";
    this.#answer.dataset.state = cancelled ? "cancelled" : "done";
    this.#answer.dataset.finishReason = r.finish_reason ?? "";
    if (!this.#answer.textContent && r.content) this.#answer.textContent = r.content;
    const parts = [
      cancelled ? "stopped" : r.model ?? "done"
    ];
    if (r.timing) parts.push(`${(r.timing.total_ms / 1e3).toFixed(1)} s`);
    if (r.timing?.first_token_ms != null) parts.push(`first token ${r.timing.first_token_ms} ms`);
    if (r.usage) parts.push(`${r.usage.total_tokens} tokens`);
    if (typeof r.usage?.cost === "number") parts.push(`$${r.usage.cost}`);
    if (r.finish_reason && ![
      "stop",
      "cancelled"
    ].includes(r.finish_reason)) {
      parts.push(`finish: ${r.finish_reason}`);
    }
    this.#meta.textContent = parts.join(" \xB7 ");
    setStatus(cancelled ? "Stopped" : `Answered: ${parts.slice(1).join(" \xB7 ")}`);
  }
  fail(err) {
    if (!this.running) return;
    this.#answer.dataset.state = "error";
    const code = err instanceof AgentError ? err.code : "error";
    this.#answer.dataset.error = code;
    const message = err instanceof Error ? err.message : String(err);
    this.#meta.textContent = `${code}: ${message}`;
  }
};
var answers = /* @__PURE__ */ new Map();
var theirs = /* @__PURE__ */ new Set();
function showTheirs(id, question, cancel) {
  const scroll = stickToBottom();
  ui.hint.hidden = true;
  ui.log.append(h("article", {
    class: "msg user theirs",
    "data-role": "their-question"
  }, h("div", {
    class: "bubble"
  }, question)));
  const view = new AnswerView({
    id,
    cancel
  });
  answers.set(id, view);
  theirs.add(id);
  ui.log.append(view.el);
  scroll();
  updateCancel();
}
function theirFrame(f) {
  const view = f.id === void 0 ? void 0 : answers.get(f.id);
  if (!view) return;
  const keep = stickToBottom();
  if (f.type === "response" && !f.done && typeof f.delta === "string") view.append(f.delta);
  else if (f.type === "response" && f.done) view.finish(f);
  else if (f.type === "error") {
    view.fail(new AgentError(f.code, f.message, {
      retryable: f.retryable,
      id: f.id
    }));
  }
  if (f.type === "response" && f.done || f.type === "error") {
    theirs.delete(f.id);
    updateCancel();
  }
  keep();
}
function stickToBottom() {
  const s = ui.scroller;
  const atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 40;
  return () => {
    if (atBottom) s.scrollTop = s.scrollHeight;
  };
}
function updateCancel() {
  ui.cancel.disabled = ![
    ...answers.values()
  ].some((v) => v.running);
}
async function ask(content) {
  if (!client) return;
  const scroll = stickToBottom();
  ui.hint.hidden = true;
  ui.log.append(h("article", {
    class: "msg user"
  }, h("div", {
    class: "bubble"
  }, content)));
  const handle = client.ask(content);
  const view = new AnswerView(handle);
  answers.set(handle.id, view);
  ui.log.append(view.el);
  scroll();
  updateCancel();
  try {
    for await (const delta of handle.deltas) {
      const keep = stickToBottom();
      view.append(delta);
      keep();
    }
    view.finish(await handle.response);
  } catch (err) {
    view.fail(err);
    setStatus(err instanceof Error ? err.message : String(err));
  } finally {
    updateCancel();
    stickToBottom()();
  }
}
function cancelOldest() {
  const view = [
    ...answers.values()
  ].find((v) => v.running);
  if (!view) return;
  ui.cancel.disabled = true;
  setStatus("Stopping\u2026");
  view.handle.cancel().catch((err) => setStatus(`Could not stop: ${err.message ?? err}`)).finally(updateCancel);
}
ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const content = ui.prompt.value.trim();
  if (!content) return;
  ui.prompt.value = "";
  ui.prompt.style.height = "";
  void ask(content);
});
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.prompt.addEventListener("input", () => {
  ui.prompt.style.height = "";
  ui.prompt.style.height = `${ui.prompt.scrollHeight + 2}px`;
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") cancelOldest();
});
ui.cancel.addEventListener("click", cancelOldest);
ui.connection.addEventListener("submit", (e) => {
  e.preventDefault();
  saveSettings();
  connect();
});
loadSettings();
connect();
ui.prompt.focus();
