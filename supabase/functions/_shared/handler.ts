/**
 * The agent handler: what happens when a socket connects, sends a frame,
 * closes or fails (`onConnect` / `onMessage` / `onClose` / `onError`), and
 * the per-session generation loop that turns queries into streamed frames.
 * It never throws at a client: every bad input becomes one error frame.
 *
 * @module
 */
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import type { SessionStore } from "./store.ts";
import type { UpstreamClient } from "./upstream.ts";
import { UpstreamError } from "./upstream.ts";
import {
  COMMAND_NAMES,
  type CommandFrame,
  type ErrorBody,
  type ErrorCode,
  type FeedbackFrame,
  parseClientFrame,
  PROTOCOL_VERSION,
  type QueryFrame,
} from "./protocol.ts";
import { Session } from "./session.ts";
import { SessionRegistry, type SweepReason } from "./sessions.ts";
import type { PendingQuery } from "./queue.ts";
import { sleep } from "./backoff.ts";
import type { Bus, BusMessage } from "./bus.ts";
import type { AuthUser } from "./auth.ts";
import type { UserLimits } from "./limits.ts";
import {
  collectReplay,
  parseResumeRequest,
  type ReplayPlan,
  type ResumeRequest,
} from "./resume.ts";

/** Close codes this handler uses (see docs/protocol.md). */
export const CLOSE = {
  normal: 1000,
  policy: 1008,
  tooLarge: 1009,
  internal: 1011,
  restart: 1012,
  /** The client stopped reading; it may reconnect and resume later. */
  tryAgainLater: 1013,
  unauthorized: 4001,
  tooManyConnections: 4029,
  /** Another socket resumed the session; the client must not reconnect on its own. */
  takenOver: 4002,
} as const;

/** Why a generation was aborted by us. */
type AbortWhy = "cancel" | "closed" | "released" | "slow_consumer";

/** How long a process waits for another to let go of a session it still holds. */
const RELEASE_WAIT_MS = 2000;

/** How often a paused generation checks whether its client has caught up. */
const DRAIN_POLL_MS = 10;

/** Everything the handler needs, injected so tests run it for real. */
export interface AgentDeps {
  config: Config;
  log: Logger;
  store: SessionStore;
  upstream: UpstreamClient;
  sessions: SessionRegistry;
  limits: UserLimits;
  /** Messages between processes; absent when sessions live in memory only. */
  bus?: Bus;
  /** This process's id on the bus. */
  instance?: string;
}

/** One socket's view: the session it speaks for once that is known. */
export interface Connection {
  socket: WebSocket;
  /** The authenticated user; null when auth is off. */
  user: AuthUser | null;
  /** The id sent upstream as OpenRouter's `user`. */
  upstreamUser?: string;
  /** Null until the socket is open and its session created or resumed. */
  session: Session | null;
  resume: ResumeRequest | null;
  /** Why the resume parameters were refused, if they were. */
  badResume: string | null;
  /** Frames received before the session was ready. */
  inbox: unknown[];
}

/** The lifecycle hooks the server wires sockets to. */
export interface AgentHandler {
  /** Called at upgrade time, with the URL the client connected to and who it is. */
  onConnect(
    socket: WebSocket,
    url: URL,
    user?: { user: AuthUser; upstreamUser: string },
  ): Connection;
  /** Starts or resumes the session; resolves once it is ready. */
  onOpen(conn: Connection): Promise<void>;
  onMessage(conn: Connection, data: unknown): void;
  onClose(conn: Connection, code: number, reason: string): void;
  onError(conn: Connection, err: unknown): void;
  /** Sends `shutdown` and closes every socket with 1012 so clients reconnect. */
  shutdown(reason: string): void;
  /** Starts the sweeper; returns a function that stops it. */
  startSweeper(): () => void;
  /**
   * Delivers a notification to a session, wherever its socket is: here, or
   * (with a durable store) through the bus to the process holding it.
   */
  notify(
    sessionId: string,
    note: { event: string; content: string; data?: Record<string, unknown> },
  ): Promise<"delivered" | "forwarded" | "not_found">;
}

/** Frames a client may send before its session is ready, beyond which it is cut off. */
const MAX_INBOX = 256;

const encoder = new TextEncoder();

/** Keeps feedback answerable for recent responses without growing forever. */
const ANSWERED_IDS_KEPT = 1000;

/**
 * Creates the handler.
 *
 * @example
 * ```ts
 * const agent = createAgentHandler({ config, log, store, upstream, sessions });
 * const { socket, response } = Deno.upgradeWebSocket(req);
 * const conn = agent.onConnect(socket, new URL(req.url));
 * socket.onopen = () => agent.onOpen(conn);
 * socket.onmessage = (e) => agent.onMessage(conn, e.data);
 * ```
 */
export function createAgentHandler(deps: AgentDeps): AgentHandler {
  const { config, log, store, upstream, sessions, limits, bus } = deps;
  const instance = deps.instance ?? crypto.randomUUID();
  /** Resolvers waiting for another process to let go of a session. */
  const releaseWaiters = new Map<string, () => void>();
  bus?.subscribe((msg) => {
    onBus(msg).catch((err) => log.error("bus_message_failed", { err: String(err) }));
  }).catch((err) => log.error("bus_subscribe_failed", { err: String(err) }));
  const answered = new WeakMap<Session, Set<string>>();

  function error(
    session: Session,
    code: ErrorCode,
    message: string,
    extra: Partial<ErrorBody> = {},
  ): void {
    session.counters.errors++;
    session.emit({ type: "error", code, message, retryable: false, ...extra });
  }

  function markAnswered(session: Session, id: string): void {
    let ids = answered.get(session);
    if (!ids) answered.set(session, ids = new Set());
    ids.add(id);
    if (ids.size > ANSWERED_IDS_KEPT) ids.delete(ids.values().next().value!);
  }

  function connectedFrame(session: Session) {
    const mode = config.simulator
      ? " [OFFLINE SIMULATOR: answers are simulated, no model is called]"
      : config.apiKey
      ? ""
      : " [NOT CONFIGURED: OPENROUTER_API_KEY is not set; queries will fail]";
    return {
      type: "notification" as const,
      event: "connected",
      content: `Connected to Agent WebSocket. Session ID: ${session.id}${mode}`,
      session_id: session.id,
      protocol: PROTOCOL_VERSION,
      agent: config.agentName,
      model: config.model,
      models: config.allowedModels,
      simulator: config.simulator,
      limits: {
        max_message_bytes: config.maxMessageBytes,
        max_content_chars: config.maxContentChars,
        max_queue: config.maxQueue,
        rate_limit_per_minute: config.rateLimitPerMinute,
        rate_limit_burst: config.rateLimitBurst,
        max_history: config.maxHistory,
      },
      heartbeat_ms: config.heartbeatSeconds * 1000,
      resume_window_ms: config.resumeWindowMs,
    };
  }

  function onQuery(session: Session, frame: QueryFrame): void {
    const id = frame.id ?? crypto.randomUUID();
    if (session.knows(id)) {
      return error(session, "invalid_message", "A query with this id is already in progress", {
        id,
      });
    }
    if (!config.apiKey) {
      return error(
        session,
        "not_configured",
        "The server has no OPENROUTER_API_KEY configured, so it cannot answer",
        { id },
      );
    }
    const model = frame.model ?? config.model;
    if (!config.allowedModels.includes(model)) {
      return error(session, "model_not_allowed", `Model is not allowed here: ${model}`, {
        id,
        issues: [{ path: "model", message: `Allowed: ${config.allowedModels.join(", ")}` }],
      });
    }
    const wait = limits.take(session.rateKey);
    if (wait > 0) {
      return error(session, "rate_limited", "Too many queries; slow down", {
        id,
        retryable: true,
        retry_after_ms: wait,
      });
    }
    const query: PendingQuery = {
      id,
      content: frame.content,
      model,
      stream: frame.stream ?? true,
      receivedAt: performance.now(),
    };
    if (session.inFlight || session.queue.size > 0) {
      const position = session.queue.push(query);
      if (position === 0) {
        return error(session, "queue_full", `At most ${config.maxQueue} queries may wait`, {
          id,
          retryable: true,
        });
      }
      session.counters.queries++;
      session.emit({
        type: "status",
        id,
        state: "queued",
        content: `Queued at position ${position}`,
        position,
      });
      session.syncOpenQueries();
      return;
    }
    session.counters.queries++;
    run(session, query);
    session.syncOpenQueries();
  }

  /** Runs a query to its one terminal frame, then the next waiting one. */
  async function run(session: Session, q: PendingQuery): Promise<void> {
    const controller = new AbortController();
    const inFlight = { id: q.id, controller, content: "" };
    session.inFlight = inFlight;
    // Deltas not yet sent because the client is behind; sent as one when it catches up.
    let pending = "";
    const flush = () => {
      if (pending === "") return;
      session.emit({ type: "response", id: q.id, delta: pending, done: false });
      pending = "";
    };
    const drain = async () => {
      for (;;) {
        const ws = session.socket;
        if (!ws || controller.signal.aborted || ws.bufferedAmount <= config.sendHighWaterBytes) {
          break;
        }
        await sleep(DRAIN_POLL_MS, controller.signal).catch(() => {});
      }
      flush();
    };
    session.emit({ type: "status", id: q.id, state: "thinking", content: "Thinking..." });
    log.debug("query_start", { session: session.id, query: q.id, model: q.model });
    try {
      const history = await store.history(session.id);
      const result = await upstream.stream(
        {
          model: q.model,
          messages: [
            { role: "system", content: config.systemPrompt },
            ...history,
            { role: "user", content: q.content },
          ],
          user: session.upstreamUser,
        },
        {
          onDelta: (delta) => {
            inFlight.content += delta;
            if (!q.stream) return;
            pending += delta;
            const ws = session.socket;
            if (!ws || ws.bufferedAmount <= config.sendHighWaterBytes) return flush();
            // The client is behind: stop reading the upstream until it catches up.
            return drain();
          },
          onRetry: ({ attempt, delayMs, code }) => {
            session.emit({
              type: "status",
              id: q.id,
              state: "retrying",
              content: `The model provider failed (${code}); retrying in ${delayMs} ms`,
              attempt,
              delay_ms: delayMs,
            });
          },
        },
        controller.signal,
      );
      flush();
      await store.appendHistory(session.id, [
        { role: "user", content: q.content },
        { role: "assistant", content: result.content },
      ]);
      const totalMs = Math.round(performance.now() - q.receivedAt);
      session.counters.responses++;
      session.counters.completionTokens += result.usage?.completion_tokens ?? 0;
      markAnswered(session, q.id);
      session.emit({
        type: "response",
        id: q.id,
        content: result.content,
        done: true,
        model: result.model,
        finish_reason: result.finishReason,
        usage: result.usage,
        timing: {
          first_token_ms: result.firstTokenMs === null ? null : Math.round(result.firstTokenMs),
          total_ms: totalMs,
        },
      });
      log.info("query_done", {
        session: session.id,
        query: q.id,
        model: result.model,
        first_token_ms: result.firstTokenMs === null ? null : Math.round(result.firstTokenMs),
        total_ms: totalMs,
        attempts: result.attempts,
        completion_tokens: result.usage?.completion_tokens,
      });
    } catch (err) {
      const why = controller.signal.aborted ? controller.signal.reason as AbortWhy : undefined;
      flush();
      if (why === "slow_consumer") {
        error(session, "slow_consumer", "The client is not reading its frames; answer stopped", {
          id: q.id,
          retryable: true,
        });
      } else if (why === "cancel") {
        endCancelled(session, q, inFlight.content);
      } else if (why !== "closed") {
        const e = err instanceof UpstreamError ? err : undefined;
        if (!e) {
          log.error("query_internal_error", { session: session.id, query: q.id, err: String(err) });
        }
        log.info("query_failed", {
          session: session.id,
          query: q.id,
          code: e?.code ?? "internal_error",
        });
        error(
          session,
          e?.code ?? "internal_error",
          e?.message ?? "Something went wrong on the server",
          {
            id: q.id,
            retryable: e?.retryable ?? true,
            ...(e?.retryAfterMs !== undefined ? { retry_after_ms: e.retryAfterMs } : {}),
          },
        );
      }
    } finally {
      if (session.inFlight === inFlight) session.inFlight = null;
    }
    const next = session.closed ? undefined : session.queue.shift();
    if (next) run(session, next);
    if (!session.closed) session.syncOpenQueries();
  }

  function endCancelled(session: Session, q: PendingQuery, partial: string): void {
    session.counters.cancelled++;
    markAnswered(session, q.id);
    session.emit({ type: "status", id: q.id, state: "cancelled", content: "Cancelled" });
    session.emit({
      type: "response",
      id: q.id,
      content: partial,
      done: true,
      model: q.model,
      finish_reason: "cancelled",
      usage: null,
      timing: { first_token_ms: null, total_ms: Math.round(performance.now() - q.receivedAt) },
    });
  }

  async function onCommand(session: Session, frame: CommandFrame): Promise<void> {
    const name = frame.name as (typeof COMMAND_NAMES)[number];
    switch (name) {
      case "cancel": {
        const target = typeof frame.args?.id === "string" ? frame.args.id : session.inFlight?.id;
        if (!target || !session.knows(target)) {
          return error(session, "not_found", "No query with that id is running or waiting", {
            id: frame.id,
          });
        }
        session.emit({
          type: "notification",
          event: "cancelled",
          content: `Cancelling query ${target}`,
          id: frame.id,
          query_id: target,
        });
        const waiting = session.queue.remove(target);
        if (waiting) {
          endCancelled(session, waiting, "");
          session.syncOpenQueries();
        } else session.inFlight?.controller.abort("cancel" satisfies AbortWhy);
        return;
      }
      case "reset": {
        await store.clearHistory(session.id);
        session.emit({
          type: "notification",
          event: "reset",
          content: "Conversation history cleared",
          id: frame.id,
        });
        return;
      }
      case "history": {
        const messages = await store.history(session.id);
        session.emit({
          type: "notification",
          event: "history",
          content: `${messages.length} messages`,
          id: frame.id,
          messages,
        });
        return;
      }
      case "stats": {
        const c = session.counters;
        session.emit({
          type: "notification",
          event: "stats",
          content: "Session statistics",
          id: frame.id,
          session_id: session.id,
          queries: c.queries,
          responses: c.responses,
          errors: c.errors,
          cancelled: c.cancelled,
          completion_tokens: c.completionTokens,
          queued: session.queue.size,
          in_flight: session.inFlight?.id ?? null,
          feedback: session.feedback.length,
          age_s: Math.round((Date.now() - session.createdAt) / 1000),
        });
        return;
      }
      default:
        return error(session, "unknown_command", `Unknown command: ${frame.name}`, {
          id: frame.id,
          issues: [{ path: "name", message: `Known: ${COMMAND_NAMES.join(", ")}` }],
        });
    }
  }

  /**
   * Ends this process's hold on a session. "closed" forgets it everywhere;
   * "released" keeps it in a durable store for another process to resume,
   * with its open queries left for that process to end as `interrupted`.
   */
  function endSession(session: Session, why: "closed" | "released"): Promise<void> {
    if (session.closed) return Promise.resolve();
    session.inFlight?.controller.abort(why satisfies AbortWhy);
    session.queue.drain();
    session.closed = true;
    sessions.delete(session.id);
    limits.forget(session.rateKey);
    const done = why === "released" ? store.release(session.id) : store.delete(session.id);
    return done.catch((err) =>
      log.warn("store_end_failed", { session: session.id, why, err: String(err) })
    );
  }

  function closeSocket(session: Session, code: number, reason: string): void {
    try {
      session.socket?.close(code, reason);
    } catch {
      // Already closing.
    }
  }

  function expire(session: Session, why: SweepReason): void {
    if (why === "resume_window") {
      log.info("session_expired", { session: session.id });
      endSession(session, "closed");
    } else if (why === "idle") {
      log.info("session_timeout", { session: session.id });
      session.emit({
        type: "notification",
        event: "session_timeout",
        content: "Session closed due to inactivity",
      });
      closeSocket(session, CLOSE.normal, "Session timeout");
      endSession(session, "closed");
    } else {
      log.info("connection_max_age", { session: session.id });
      session.emit({
        type: "notification",
        event: "shutdown",
        content: "Connection reached its maximum age; reconnect",
        reason: "max_connection_age",
        reconnect: true,
      });
      closeSocket(session, CLOSE.restart, "Maximum connection age");
    }
  }

  /** Sends a frame that belongs to this socket, not to the session's sequence. */
  function sendSocketFrame(socket: WebSocket, frame: Record<string, unknown>): void {
    try {
      socket.send(JSON.stringify({ ...frame, seq: 0, timestamp: new Date().toISOString() }));
    } catch {
      // The socket is already gone.
    }
  }

  function newSession(conn: Connection): Session {
    const session = new Session(
      crypto.randomUUID(),
      store,
      config,
      conn.user?.id ?? null,
      conn.upstreamUser,
    );
    store.create(session.id, session.owner);
    session.onOverflow = () => overflow(session);
    session.attach(conn.socket);
    sessions.add(session);
    conn.session = session;
    log.info("session_open", { session: session.id });
    session.emit(connectedFrame(session));
    return session;
  }

  /**
   * Takes over a session this process does not hold, from a durable store:
   * asks a live holder to let go (it flushes first), claims it, continues its
   * seq, and ends the queries that were open there as `interrupted`.
   */
  async function adopt(conn: Connection, req: ResumeRequest): Promise<Session | undefined> {
    let rec = await store.load(req.sessionId);
    if (!rec || rec.owner !== (conn.user?.id ?? null)) return undefined;
    if (rec.instance && rec.instance !== instance && rec.instanceAlive && bus) {
      const released = new Promise<void>((resolve) => releaseWaiters.set(req.sessionId, resolve));
      await bus.publish({ kind: "release", session: req.sessionId, from: instance });
      await Promise.race([released, sleep(RELEASE_WAIT_MS)]);
      releaseWaiters.delete(req.sessionId);
    }
    // A local session may have appeared meanwhile (another socket resumed it here).
    const local = sessions.get(req.sessionId);
    if (local) return local;
    rec = await store.claim(req.sessionId);
    if (!rec) return undefined;
    // The client may hold frames the old process sent but never made durable; it has
    // them, so numbering continues after them instead of reusing their seqs.
    const ahead = req.lastSeq - rec.lastSeq;
    if (ahead > config.replayMaxFrames) return undefined;
    const session = new Session(
      rec.id,
      store,
      config,
      rec.owner,
      conn.upstreamUser,
      Math.max(rec.lastSeq, req.lastSeq),
    );
    session.onOverflow = () => overflow(session);
    session.detach();
    sessions.add(session);
    log.info("session_adopted", {
      session: session.id,
      durable_seq: rec.lastSeq,
      client_seq: req.lastSeq,
      interrupted: rec.openQueries.length,
    });
    for (const id of rec.openQueries) {
      error(session, "interrupted", "The server handling this query stopped; send it again", {
        id,
        retryable: true,
      });
    }
    if (rec.openQueries.length > 0) session.syncOpenQueries();
    return session;
  }

  async function onBus(msg: BusMessage): Promise<void> {
    if (msg.from === instance) return;
    const session = sessions.get(msg.session);
    if (msg.kind === "released") {
      releaseWaiters.get(msg.session)?.();
    } else if (msg.kind === "release" && session) {
      log.info("session_handover", { session: session.id, to: msg.from });
      const ws = session.socket;
      if (ws) {
        sendSocketFrame(ws, {
          type: "notification",
          event: "session_taken_over",
          content: "Another connection resumed this session",
          session_id: session.id,
        });
        try {
          ws.close(CLOSE.takenOver, "Session taken over");
        } catch {
          // Already closing.
        }
      }
      await endSession(session, "released");
      await bus?.publish({ kind: "released", session: msg.session, from: instance });
    } else if (msg.kind === "notify" && session) {
      session.emit({
        type: "notification",
        event: msg.event,
        content: msg.content,
        ...msg.data,
      });
    }
  }

  async function resume(conn: Connection, req: ResumeRequest): Promise<void> {
    const found = sessions.get(req.sessionId) ??
      (store.durable
        ? await adopt(conn, req).catch((err) => {
          log.error("adopt_failed", { session: req.sessionId, err: String(err) });
          return undefined;
        })
        : undefined);
    // Another user's session is reported exactly like a missing one: nothing leaks.
    const target = found && found.owner === (conn.user?.id ?? null) ? found : undefined;
    const plan: ReplayPlan = target && !target.closed ? await collectReplay(target, req.lastSeq) : {
      ok: false,
      code: "not_found",
      message: "Unknown session, or its resume window has ended; starting a new session",
    };
    if (conn.socket.readyState !== WebSocket.OPEN) return;
    if (!plan.ok || !target) {
      log.info("resume_refused", { session: req.sessionId, code: plan.ok ? "" : plan.code });
      const fresh = newSession(conn);
      error(fresh, plan.ok ? "not_found" : plan.code, plan.ok ? "" : plan.message);
      return;
    }
    // From here to the end nothing awaits: no frame can be emitted between the
    // replay and the attach, so the client misses nothing and sees nothing twice.
    const previous = target.socket;
    if (previous && previous !== conn.socket) {
      sendSocketFrame(previous, {
        type: "notification",
        event: "session_taken_over",
        content: "Another connection resumed this session",
        session_id: target.id,
      });
      try {
        previous.close(CLOSE.takenOver, "Session taken over");
      } catch {
        // Already closing.
      }
    }
    target.attach(conn.socket);
    target.onOverflow = () => overflow(target);
    conn.session = target;
    sendSocketFrame(conn.socket, {
      type: "notification",
      event: "resumed",
      content: `Resumed session ${target.id}`,
      session_id: target.id,
      last_seq: req.lastSeq,
      replayed: plan.frames.length,
      resume_window_ms: config.resumeWindowMs,
    });
    for (const f of plan.frames) target.sendRaw(f.json);
    log.info("session_resumed", { session: target.id, replayed: plan.frames.length });
  }

  /** A client that stopped reading: end its answer, close, let it resume when it can. */
  function overflow(session: Session): void {
    log.warn("slow_consumer", { session: session.id, query: session.inFlight?.id });
    const ws = session.socket;
    if (session.inFlight) session.inFlight.controller.abort("slow_consumer" satisfies AbortWhy);
    try {
      ws?.close(CLOSE.tryAgainLater, "Client is not reading");
    } catch {
      // Already closing.
    }
  }

  function dispatch(session: Session, data: unknown): void {
    session.lastActivity = Date.now();
    if (typeof data !== "string") {
      return error(session, "unsupported_frame", "Binary frames are not supported; send JSON text");
    }
    // A UTF-8 character is at most 3 bytes per UTF-16 unit, so short frames skip encoding.
    if (data.length * 3 > config.maxMessageBytes) {
      const bytes = encoder.encode(data).length;
      if (bytes > config.hardMaxMessageBytes) {
        session.counters.errors++;
        try {
          session.socket?.close(CLOSE.tooLarge, "Message too large");
        } catch {
          // Already closing.
        }
        return;
      }
      if (bytes > config.maxMessageBytes) {
        return error(
          session,
          "message_too_large",
          `Frame is ${bytes} bytes; the limit is ${config.maxMessageBytes}`,
        );
      }
    }
    const parsed = parseClientFrame(data, config.maxContentChars);
    if (!parsed.ok) {
      session.counters.errors++;
      session.emit(parsed.error);
      return;
    }
    const frame = parsed.frame;
    switch (frame.type) {
      case "ping":
        session.emit({ type: "pong", ...(frame.id !== undefined ? { id: frame.id } : {}) });
        return;
      case "query":
        return onQuery(session, frame);
      case "command":
        onCommand(session, frame).catch((err) => {
          log.error("command_failed", { session: session.id, err: String(err) });
          error(session, "internal_error", "The command failed on the server", {
            id: frame.id,
            retryable: true,
          });
        });
        return;
      case "feedback":
        return onFeedback(session, frame);
    }
  }

  function onFeedback(session: Session, frame: FeedbackFrame): void {
    if (!answered.get(session)?.has(frame.id)) {
      return error(session, "not_found", "No response with that id in this session", {
        id: frame.id,
      });
    }
    session.feedback.push({
      id: frame.id,
      rating: frame.rating,
      comment: frame.comment,
      at: new Date().toISOString(),
    });
    log.info("feedback", { session: session.id, query: frame.id, rating: frame.rating });
    session.emit({
      type: "notification",
      event: "feedback_received",
      content: "Thanks for the feedback",
      id: frame.id,
      rating: frame.rating,
    });
  }

  return {
    onConnect(socket, url, who) {
      const parsed = parseResumeRequest(url);
      return {
        socket,
        user: who?.user ?? null,
        upstreamUser: who?.upstreamUser,
        session: null,
        resume: parsed && !("error" in parsed) ? parsed : null,
        badResume: parsed && "error" in parsed ? parsed.error : null,
        inbox: [],
      };
    },

    async onOpen(conn) {
      if (conn.resume) await resume(conn, conn.resume);
      else {
        const session = newSession(conn);
        if (conn.badResume) error(session, "invalid_message", conn.badResume);
      }
      // Frames that arrived while the session was being found are handled in order.
      const session = conn.session;
      const inbox = conn.inbox.splice(0);
      if (session) { for (const data of inbox) dispatch(session, data); }
    },

    onMessage(conn, data) {
      const session = conn.session;
      if (!session) {
        if (conn.inbox.push(data) > MAX_INBOX) {
          conn.socket.close(CLOSE.policy, "Too many frames before the session was ready");
        }
        return;
      }
      // A socket whose session was taken over, or that ended, has no say any more.
      if (session.closed || session.socket !== conn.socket) return;
      dispatch(session, data);
    },

    onClose(conn, code, reason) {
      const session = conn.session;
      if (!session || session.closed || session.socket !== conn.socket) return;
      if (config.resumeWindowMs > 0) {
        log.info("session_detached", { session: session.id, code, reason: reason.slice(0, 120) });
        session.detach();
      } else {
        log.info("session_close", { session: session.id, code, reason: reason.slice(0, 120) });
        endSession(session, "closed");
      }
    },

    onError(conn, err) {
      log.warn("socket_error", {
        session: conn.session?.id,
        err: err instanceof ErrorEvent ? err.message : String(err),
      });
    },

    shutdown(reason) {
      for (const session of [...sessions.values()]) {
        session.emit({
          type: "notification",
          event: "shutdown",
          content: "The server is restarting; reconnect",
          reason,
          reconnect: true,
        });
        closeSocket(session, CLOSE.restart, "Server restart");
        // A durable session stays resumable in another process.
        endSession(session, store.durable ? "released" : "closed");
      }
    },

    async notify(sessionId, note) {
      const local = sessions.get(sessionId);
      if (local) {
        local.emit({
          type: "notification",
          event: note.event,
          content: note.content,
          ...note.data,
        });
        return "delivered";
      }
      if (!bus || !(await store.load(sessionId))) return "not_found";
      await bus.publish({ kind: "notify", session: sessionId, from: instance, ...note });
      return "forwarded";
    },

    startSweeper() {
      const policy = {
        idleMs: config.sessionTimeoutMs,
        resumeWindowMs: config.resumeWindowMs,
        maxConnectionAgeMs: config.maxConnectionAgeMs,
        intervalMs: config.sweepIntervalMs,
      };
      sessions.startSweeper(
        policy,
        expire,
        () =>
          store.maintain().catch((err) => log.warn("store_upkeep_failed", { err: String(err) })),
      );
      return () => sessions.stopSweeper();
    },
  };
}
