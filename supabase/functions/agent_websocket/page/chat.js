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
    case 4001:
      return {
        reconnect: false,
        error: "unauthorized"
      };
    case 1008:
      return {
        reconnect: false,
        error: "policy_violation"
      };
    case 4029:
      return {
        reconnect: false,
        error: "too_many_connections"
      };
    case 4002:
      return {
        reconnect: false,
        error: "session_taken_over"
      };
    case 1e3:
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
  const base = globalThis.location?.href;
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  u.searchParams.set("session_id", sessionId);
  u.searchParams.set("last_seq", String(lastSeq));
  return u.toString();
}

// supabase/functions/_shared/protocol/codes.ts
var SUBPROTOCOL = "agent-websocket.v1";

// client/agent_client.ts
var REPLAY_GRACE_MS = 2e3;
var STABLE_MS = 3e3;
var MAX_RESENDS = 2;
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
   * client.on("frame", (f) => f.type === "error" && console.log(AgentError.fromFrame(f).code));
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
};
var DeltaStream = class {
  #chunks = [];
  #ended = false;
  #error;
  #wakers = [];
  push(chunk) {
    this.#chunks.push(chunk);
    this.#wake();
  }
  end(error) {
    this.#ended = true;
    this.#error = error;
    this.#wake();
  }
  #wake() {
    for (const w of this.#wakers.splice(0)) w();
  }
  async *[Symbol.asyncIterator]() {
    for (let i = 0; ; ) {
      if (i < this.#chunks.length) yield this.#chunks[i++];
      else if (this.#ended) {
        if (this.#error !== void 0) throw this.#error;
        return;
      } else await new Promise((r) => this.#wakers.push(r));
    }
  }
};
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
var noop = () => {
};
var textDecoder = new TextDecoder();
var textEncoder = new TextEncoder();
function withId(err, id) {
  return new AgentError(err.code, err.message, {
    retryable: err.retryable,
    id
  });
}
var AgentClient = class {
  #url;
  #WS;
  #token;
  #protocols;
  #policy;
  #connectTimeoutMs;
  #heartbeat;
  #maxQueue;
  #state = "idle";
  #ws;
  #generation = 0;
  #sessionId;
  #lastSeq = 0;
  #handshaken = false;
  #sessionEnded = false;
  #attempt = 0;
  #openedAt = 0;
  #replayLeft = 0;
  #limits = {};
  #serverHeartbeatMs = Infinity;
  #lastFrameAt = 0;
  #probeSentAt = 0;
  #timers = {};
  #queue = [];
  #asks = /* @__PURE__ */ new Map();
  #calls = /* @__PURE__ */ new Set();
  #ready;
  // Listener<never> is the common supertype of every listener type.
  #listeners = /* @__PURE__ */ new Map();
  /**
   * Creates a client; nothing happens on the network until {@link connect}.
   *
   * @example
   * ```ts
   * import WebSocket from "ws"; // Node 20
   * const client = new AgentClient("ws://127.0.0.1:8000", { WebSocket, reconnect: { maxAttempts: 5 } });
   * ```
   */
  constructor(url, options = {}) {
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (!WS) {
      throw new TypeError("No global WebSocket: pass one, e.g. { WebSocket } from the 'ws' package");
    }
    this.#url = url;
    this.#WS = WS;
    this.#token = options.token;
    this.#protocols = [
      SUBPROTOCOL,
      ...(options.protocols ?? []).filter((p) => p !== SUBPROTOCOL)
    ];
    this.#policy = resolveReconnect(options.reconnect);
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 1e4;
    this.#heartbeat = options.heartbeat === false ? false : {
      intervalMs: options.heartbeat?.intervalMs ?? 15e3,
      timeoutMs: options.heartbeat?.timeoutMs ?? 1e4
    };
    this.#maxQueue = options.maxOfflineQueue ?? 100;
  }
  /** @example `if (client.state === "reconnecting") showBanner();` */
  get state() {
    return this.#state;
  }
  /** @example `localStorage.sessionId = client.sessionId;` */
  get sessionId() {
    return this.#sessionId;
  }
  /** Highest `seq` delivered so far. @example `console.log(client.lastSeq);` */
  get lastSeq() {
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
  on(type, listener) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = /* @__PURE__ */ new Set());
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
  off(type, listener) {
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
    const stream = new DeltaStream();
    let resolve = noop, reject = noop;
    const response = new Promise((res, rej) => [resolve, reject] = [
      res,
      rej
    ]);
    response.catch(noop);
    const ask2 = {
      frame,
      sent: false,
      acked: false,
      resends: 0,
      stream,
      streamed: false,
      resolve: (r) => (stream.end(), resolve(r)),
      fail: (e) => (stream.end(e), reject(e))
    };
    const handle = {
      id,
      deltas: stream,
      response,
      // The answer already tells how the query ended, so a cancel that lost the race with the
      // end of the query is not an error worth an unhandled rejection.
      cancel: () => this.#asks.has(id) ? this.cancel(id).then(noop, noop) : Promise.resolve()
    };
    try {
      if (this.#asks.has(id)) throw new AgentError("duplicate_id", `Query ${id} is in progress`);
      this.#checkLimits(frame);
      this.#asks.set(id, ask2);
      this.#enqueue({
        frame,
        onSent: () => ask2.sent = true
      });
    } catch (e) {
      if (this.#asks.get(id) === ask2) this.#asks.delete(id);
      ask2.fail(e instanceof AgentError ? e : new AgentError("internal_error", String(e)));
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
   * await client.cancel(handle.id);
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
   * await client.reset();
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
   * const n = await client.history();
   * console.log(n.messages ?? n.content);
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
   * console.log(await client.stats());
   * ```
   */
  stats() {
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
   * console.log(`${await client.ping()} ms`);
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
   * client.send({ type: "feedback", id: "q1", rating: "down" });
   * ```
   */
  send(frame) {
    this.#enqueue({
      frame
    });
  }
  /**
   * Closes for good: no reconnect; pending queries and calls reject with `closed`.
   *
   * @example
   * ```ts
   * client.close();
   * ```
   */
  close(code = 1e3, reason = "Client closed") {
    if (this.#state === "closed") return;
    const wasIdle = this.#state === "idle";
    this.#dropSocket(code, reason);
    this.#stop(new AgentError("closed", "The client was closed"));
    if (!wasIdle) this.#emit("close", {
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
      this.#emit("error", new AgentError("token_error", `Token provider failed: ${e}`));
      return this.#onClose(4e3, "Token provider failed");
    }
    if (generation !== this.#generation || this.#state === "closed") return;
    const protocols = token ? [
      ...this.#protocols,
      `jwt-${token}`
    ] : this.#protocols;
    let ws;
    try {
      const url = this.#sessionId ? resumeUrl(this.#url, this.#sessionId, this.#lastSeq) : this.#url;
      ws = new this.#WS(url, protocols);
    } catch (e) {
      const err = new AgentError("invalid_url", `Cannot open ${this.#url}: ${e}`);
      this.#emit("error", err);
      return this.#stop(err);
    }
    this.#ws = ws;
    this.#handshaken = false;
    ws.onmessage = (ev) => this.#ws === ws && this.#onMessage(ev.data);
    ws.onclose = (ev) => this.#ws === ws && this.#onClose(ev.code || 1006, ev.reason ?? "");
    ws.onerror = noop;
    this.#timers.connect = setTimeout(() => this.#abort("Connect timeout"), this.#connectTimeoutMs);
  }
  /** Detaches the current socket and stops its timers; closes it when given a code. */
  #dropSocket(code, reason) {
    const ws = this.#ws;
    this.#ws = void 0;
    this.#handshaken = false;
    this.#replayLeft = 0;
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
    this.#dropSocket(4e3, reason);
    this.#onClose(1006, reason);
  }
  #onClose(code, reason) {
    this.#dropSocket();
    if (this.#state === "closed") return;
    if (this.#openedAt && Date.now() - this.#openedAt >= STABLE_MS) this.#attempt = 0;
    this.#openedAt = 0;
    let { reconnect, error } = closeDisposition(code, reason);
    if (this.#sessionEnded) [reconnect, error] = [
      false,
      "session_timeout"
    ];
    if (code === 1009) {
      this.#failSent(new AgentError("message_too_large", "Frame too large for the server"), true);
    }
    const willReconnect = reconnect && this.#attempt < this.#policy.maxAttempts;
    this.#emit("close", {
      code,
      reason,
      willReconnect
    });
    if (this.#stopped()) return;
    if (!willReconnect) {
      const err = new AgentError(error ?? "reconnect_failed", error ? `Connection closed (${code}${reason ? ` ${reason}` : ""})` : `Gave up after ${this.#attempt} reconnect attempts`, {
        retryable: error === void 0 || error === "too_many_connections"
      });
      if (error === "session_timeout") this.#sessionId = void 0;
      this.#emit("error", err);
      return this.#stop(err);
    }
    const delayMs = backoffDelay(this.#attempt, this.#policy);
    this.#attempt++;
    this.#state = "reconnecting";
    this.#timers.retry = setTimeout(() => void this.#open(), delayMs);
    this.#emit("reconnecting", {
      attempt: this.#attempt,
      delayMs
    });
  }
  // A method, not an inline comparison: TypeScript cannot see that listeners change the state.
  #stopped() {
    return this.#state === "closed";
  }
  #stop(err) {
    this.#dropSocket(1e3, "Client stopped");
    this.#generation++;
    this.#state = "closed";
    this.#sessionEnded = false;
    this.#queue = [];
    const pending = [
      ...this.#asks.values(),
      ...this.#calls
    ];
    this.#asks.clear();
    this.#calls.clear();
    for (const p of pending) p.fail(withId(err, p.frame.id));
    this.#ready?.reject(err);
    this.#ready = void 0;
  }
  // -------------------------------------------------------------------------------------------
  // Incoming frames
  #onMessage(data) {
    this.#lastFrameAt = Date.now();
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
    clearTimeout(this.#timers.connect);
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
    const lost = !resumed && previous !== void 0;
    if (lost || sessionId !== previous) {
      this.#emit("session", {
        sessionId,
        previousSessionId: previous,
        lost
      });
    }
    if (lost) {
      this.#failSent(new AgentError("session_lost", `Session ${previous} expired; a new session started`, {
        retryable: true
      }));
    }
    if (this.#state === "open") this.#dispatch(f);
    if (this.#state === "open") this.#emit("open", {
      sessionId,
      resumed,
      replayed
    });
    this.#ready?.resolve();
    this.#ready = void 0;
    if (!replayed) this.#afterReplay();
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
    clearTimeout(this.#timers.replay);
    if (this.#state !== "open") return;
    this.#replayLeft = 0;
    for (const p of [
      ...this.#asks.values(),
      ...this.#calls
    ]) {
      if (!p.sent || p.acked) continue;
      if (++p.resends <= MAX_RESENDS) {
        this.#write(p.frame);
        continue;
      }
      const id = p.frame.id;
      if (id !== void 0 && this.#asks.get(id) === p) this.#asks.delete(id);
      this.#calls.delete(p);
      const why = "The connection kept dropping before the server answered";
      p.fail(new AgentError("delivery_failed", why, {
        retryable: true,
        id
      }));
    }
    while (this.#queue.length && this.#canSend()) {
      const { frame, onSent } = this.#queue.shift();
      this.#write(frame);
      onSent?.();
    }
  }
  #dispatch(f) {
    this.#emit("frame", f);
    const id = typeof f.id === "string" ? f.id : void 0;
    const ask2 = id === void 0 ? void 0 : this.#asks.get(id);
    if (ask2) ask2.acked = true;
    switch (f.type) {
      case "notification":
        if (f.event === "session_timeout") this.#sessionEnded = true;
        this.#emit("notification", f);
        return this.#settleCall(f);
      case "status":
        return this.#emit("status", f);
      case "pong":
        this.#emit("pong", f);
        return this.#settleCall(f);
      case "error": {
        const err = AgentError.fromFrame(f);
        this.#emit("error", err);
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
        this.#emit("response", r);
        if (!ask2) return;
        if (typeof r.delta === "string" && r.delta) {
          ask2.stream.push(r.delta);
          ask2.streamed = true;
        }
        if (r.done !== true) return;
        if (!ask2.streamed && typeof r.content === "string" && r.content) ask2.stream.push(r.content);
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
      this.#enqueue({
        frame,
        onSent: () => (call.sent = true, onSent?.())
      });
      this.#calls.add(call);
    });
  }
  #canSend() {
    return this.#state === "open" && this.#handshaken && this.#replayLeft === 0 && this.#ws !== void 0;
  }
  #enqueue(item) {
    if (this.#state === "closed") throw new AgentError("closed", "The client is closed");
    if (this.#canSend()) {
      this.#write(item.frame);
      return item.onSent?.();
    }
    if (this.#queue.length >= this.#maxQueue) {
      throw new AgentError("offline_queue_full", `Offline queue is full (${this.#maxQueue} frames)`, {
        retryable: true
      });
    }
    this.#queue.push(item);
  }
  #write(frame) {
    try {
      this.#ws?.send(JSON.stringify(frame));
    } catch {
    }
  }
  /** Rejects what the server may have had; frames never sent stay queued for the next session. */
  #failSent(err, unackedOnly = false) {
    for (const [id, ask2] of this.#asks) {
      if (ask2.sent && !(unackedOnly && ask2.acked)) {
        this.#asks.delete(id);
        ask2.fail(withId(err, id));
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
  // -------------------------------------------------------------------------------------------
  // Heartbeat
  #heartbeatInterval() {
    return this.#heartbeat ? Math.min(this.#heartbeat.intervalMs, this.#serverHeartbeatMs) : 0;
  }
  #scheduleHeartbeat(ms) {
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
    this.#write({
      type: "ping",
      id: `heartbeat-${uuid()}`
    });
    this.#probeSentAt = now;
    this.#scheduleHeartbeat(this.#heartbeat.timeoutMs);
  }
  // -------------------------------------------------------------------------------------------
  // Events
  #emit(type, event) {
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
function saveSettings() {
  const params = new URLSearchParams(location.search);
  const set = (name, value) => value ? params.set(name, value) : params.delete(name);
  set("url", ui.url.value.trim() === servedFrom() ? "" : ui.url.value.trim());
  set("conversation", ui.conversation.value.trim());
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
  const conversation = ui.conversation.value.trim();
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
  c.on("status", mine((f) => answers.get(f.id)?.status(f)));
  c.on("frame", mine((f) => {
    if (f.type === "tool_call") answers.get(f.id)?.toolCall(f);
    else if (f.type === "tool_result") answers.get(f.id)?.toolResult(f);
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
  const view = new AnswerView(client.ask(content));
  answers.set(view.handle.id, view);
  ui.log.append(view.el);
  scroll();
  updateCancel();
  try {
    for await (const delta of view.handle.deltas) {
      const keep = stickToBottom();
      view.append(delta);
      keep();
    }
    view.finish(await view.handle.response);
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
