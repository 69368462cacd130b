/**
 * The agent handler: what happens when a socket connects, opens, sends a
 * frame, closes or fails (`onConnect` / `onOpen` / `onMessage` / `onClose` /
 * `onError`) — admission of queries, resume, expiry and shutdown. The
 * generation loop, the commands and the takeover between processes live in
 * their own modules. It never throws at a client: every bad input becomes one
 * error frame.
 *
 * @module
 */
import {
  type AbortWhy,
  type AgentContext,
  type AgentDeps,
  AnsweredIds,
  CLOSE,
  closeQuietly,
  notificationFrame,
  sayTakenOver,
  sendSocketFrame,
} from "./context.ts";
import { parseClientFrame, PROTOCOL_VERSION, type QueryFrame } from "../protocol/frames.ts";
import { Session } from "../session/session.ts";
import type { SweepReason } from "../session/registry.ts";
import type { PendingQuery } from "../turn/queue.ts";
import type { AuthUser } from "../platform/auth.ts";
import {
  collectReplay,
  parseResumeRequest,
  type ReplayPlan,
  type ResumeRequest,
} from "../session/resume.ts";
import { createGenerator } from "../turn/generation.ts";
import { createCommands } from "./commands.ts";
import { createTakeover } from "../session/takeover.ts";

export { type AgentDeps, CLOSE } from "./context.ts";

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

/**
 * Creates the handler.
 *
 * @example
 * ```ts
 * const agent = createAgentHandler({ config, log, store, upstream, sessions, limits });
 * const { socket, response } = Deno.upgradeWebSocket(req);
 * const conn = agent.onConnect(socket, new URL(req.url));
 * socket.onopen = () => agent.onOpen(conn);
 * socket.onmessage = (e) => agent.onMessage(conn, e.data);
 * ```
 */
export function createAgentHandler(deps: AgentDeps): AgentHandler {
  const { config, log, store, sessions, limits, bus } = deps;
  const ctx: AgentContext = {
    ...deps,
    instance: deps.instance ?? crypto.randomUUID(),
    answered: new AnsweredIds(),
    fail(session, code, message, extra = {}) {
      session.counters.errors++;
      session.emit({ type: "error", code, message, retryable: false, ...extra });
    },
  };
  const error = ctx.fail;
  const generator = createGenerator(ctx);
  const commands = createCommands(ctx, generator);
  const prepare = (session: Session) => {
    session.onOverflow = () => overflow(session);
  };
  const takeover = createTakeover(ctx, {
    prepare,
    release: (session) => endSession(session, "released"),
  });
  bus?.subscribe((msg) => {
    takeover.onBus(msg).catch((err) => log.error("bus_message_failed", { err: String(err) }));
  }).catch((err) => log.error("bus_subscribe_failed", { err: String(err) }));

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
    generator.run(session, query);
    session.syncOpenQueries();
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
      closeQuietly(session.socket, CLOSE.normal, "Session timeout");
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
      closeQuietly(session.socket, CLOSE.restart, "Maximum connection age");
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
    prepare(session);
    session.attach(conn.socket);
    sessions.add(session);
    conn.session = session;
    log.info("session_open", { session: session.id });
    session.emit(connectedFrame(session));
    return session;
  }

  async function resume(conn: Connection, req: ResumeRequest): Promise<void> {
    const found = sessions.get(req.sessionId) ??
      (store.durable
        ? await takeover.adopt(req, conn.user?.id ?? null, conn.upstreamUser).catch((err) => {
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
    if (previous && previous !== conn.socket) sayTakenOver(previous, target.id);
    target.attach(conn.socket);
    prepare(target);
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
    session.inFlight?.controller.abort("slow_consumer" satisfies AbortWhy);
    closeQuietly(session.socket, CLOSE.tryAgainLater, "Client is not reading");
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
        closeQuietly(session.socket, CLOSE.tooLarge, "Message too large");
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
        commands.command(session, frame).catch((err) => {
          log.error("command_failed", { session: session.id, err: String(err) });
          error(session, "internal_error", "The command failed on the server", {
            id: frame.id,
            retryable: true,
          });
        });
        return;
      case "feedback":
        return commands.feedback(session, frame);
    }
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
      // Deno keeps a closed socket (and so its listeners and this connection) until its
      // idle-timeout timer fires; cutting the links here lets the session go at once.
      conn.session = null;
      conn.inbox = [];
      if (!session || session.socket !== conn.socket) return;
      if (session.closed) {
        session.socket = null;
      } else if (config.resumeWindowMs > 0) {
        log.info("session_detached", { session: session.id, code, reason: reason.slice(0, 120) });
        session.detach();
      } else {
        log.info("session_close", { session: session.id, code, reason: reason.slice(0, 120) });
        endSession(session, "closed");
        session.socket = null;
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
        closeQuietly(session.socket, CLOSE.restart, "Server restart");
        // A durable session stays resumable in another process.
        endSession(session, store.durable ? "released" : "closed");
      }
    },

    async notify(sessionId, note) {
      const local = sessions.get(sessionId);
      if (local) {
        local.emit(notificationFrame(note.event, note.content, note.data));
        return "delivered";
      }
      if (!bus || !(await store.load(sessionId))) return "not_found";
      await bus.publish({ kind: "notify", session: sessionId, from: ctx.instance, ...note });
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
