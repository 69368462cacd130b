/**
 * The agent runtime: what happens when a socket connects, opens, sends a
 * frame, closes or fails — the deployer's `onConnect`, starting or resuming
 * the session, routing each frame (queries to the session's turns, commands,
 * feedback, tool answers), expiry and shutdown. It is the one boundary where
 * a thrown `AgentError` becomes an `error` frame for a client frame; the turn
 * renders its own.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { UserLimits } from "../platform/limits.ts";
import type { DailyBudget } from "../platform/budget.ts";
import type { Quota } from "../store/quota.ts";
import type { SessionStore } from "../store/store.ts";
import type { Bus } from "../store/bus.ts";
import type { ModelBackend } from "../model/model.ts";
import { CLOSE, PROTOCOL_VERSION } from "../protocol/codes.ts";
import { AgentError, errorFrame } from "../protocol/errors.ts";
import { parseClientFrame, type QueryFrame } from "../protocol/frames.ts";
import { Session, type SessionOwner } from "../session/session.ts";
import type { SessionRegistry, SweepReason } from "../session/registry.ts";
import {
  collectReplay,
  parseResumeRequest,
  type ReplayPlan,
  type ResumeRequest,
} from "../session/resume.ts";
import { createTakeover } from "../session/takeover.ts";
import { createSessionBounds } from "../session/bounds.ts";
import {
  closeQuietly,
  notificationFrame,
  sayTakenOver,
  sendSocketFrame,
} from "../session/socket.ts";
import { createTurnRunner } from "../turn/turn.ts";
import type { AgentDefinition, AgentUser } from "./definition.ts";
import { createCommands } from "./commands.ts";
import { createContexts } from "./context.ts";
import { ToolSet } from "./tools.ts";
import { builtinTools } from "./builtin_tools.ts";

/** One socket's view: the session it speaks for once that is known. */
export interface Connection {
  socket: WebSocket;
  url: URL;
  /** The verified user; null when auth is off. */
  user: AgentUser | null;
  /** The user's access token, for a Supabase client acting as them. */
  token: string | null;
  /** The id sent upstream as OpenRouter's `user`. */
  upstreamUser?: string;
  /** Whom per-user bounds count this socket's session under (user id, else client address). */
  limitKey: string;
  /** Closes the socket when its access token expires. */
  expiry?: ReturnType<typeof setTimeout>;
  /** What `onConnect` stored; merged into the session's state. */
  state: Record<string, unknown>;
  /** Null until the socket is open and its session created or resumed. */
  session: Session | null;
  resume: ResumeRequest | null;
  /** Why the resume parameters were refused, if they were. */
  badResume: string | null;
  /** Frames received before the session was ready. */
  inbox: unknown[];
}

/** Who a socket belongs to, as the upgrade found out. */
export interface Identity {
  user: AgentUser;
  token: string;
  upstreamUser: string;
}

/** The lifecycle hooks the server wires sockets to. */
export interface AgentRuntime {
  /** The model backend in use. */
  readonly model: ModelBackend;
  /**
   * Called at upgrade time, with the URL the client connected to, who it is
   * (with auth on) and where it connects from.
   */
  onConnect(socket: WebSocket, url: URL, who?: Identity, address?: string): Connection;
  /** Runs `onConnect`, starts or resumes the session; resolves once it is ready. */
  onOpen(conn: Connection): Promise<void>;
  onMessage(conn: Connection, data: unknown): void;
  onClose(conn: Connection, code: number, reason: string): void;
  onError(conn: Connection, err: unknown): void;
  /** Sends `shutdown` and closes every socket with 1012 so clients reconnect. */
  shutdown(reason: string): void;
  /**
   * Stops taking new work here (a planned stop, the isolate's CPU budget):
   * each session is handed over — `shutdown` + 1012, released to the store —
   * as soon as its answer in flight has ended, never in the middle of one.
   * Calling it again hands over what has become idle since.
   */
  drain(reason: string): void;
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

/** What the runtime is built from. */
export interface RuntimeDeps {
  config: Config;
  log: Logger;
  store: SessionStore;
  /** Messages between processes; absent when sessions live in memory only. */
  bus?: Bus;
  sessions: SessionRegistry;
  limits: UserLimits;
  /** Per-user daily token and credit budgets; absent when none is set. */
  budget?: DailyBudget | null;
  /** Per-user counts shared with other processes; absent with the memory store. */
  quota?: Quota | null;
  /** This process's id on the bus. */
  instance: string;
  agent: AgentDefinition;
  model: ModelBackend;
}

/** Frames a client may send before its session is ready, beyond which it is cut off. */
const MAX_INBOX = 256;

const encoder = new TextEncoder();

/** The close code a refused socket gets, by the error it was refused with. */
function refusalClose(err: unknown): [number, string] {
  const code = err instanceof AgentError ? err.code : "internal_error";
  if (code === "unauthorized") return [CLOSE.unauthorized, "Unauthorized"];
  if (code === "too_many_connections") return [CLOSE.tooManyConnections, "Too many connections"];
  if (code === "internal_error") return [CLOSE.internal, "Internal error"];
  return [CLOSE.policy, "Refused"];
}

/**
 * Creates the runtime.
 *
 * @example
 * ```ts ignore
 * const runtime = createRuntime({ config, log, store, sessions, limits, instance, agent, model });
 * const { socket, response } = Deno.upgradeWebSocket(req);
 * const conn = runtime.onConnect(socket, new URL(req.url));
 * socket.onopen = () => runtime.onOpen(conn);
 * socket.onmessage = (e) => runtime.onMessage(conn, e.data);
 * ```
 */
export function createRuntime(deps: RuntimeDeps): AgentRuntime {
  const { config, log, store, sessions, limits, bus, agent, model, budget, quota } = deps;
  const tools = new ToolSet({ ...builtinTools(config.tools), ...agent.tools });
  const contexts = createContexts(config, log);

  /** Refuses a user who has spent their day's budget, saying when it resets. */
  function checkBudget(session: Session): void {
    const refusal = budget?.check(session.limitKey);
    if (!refusal) return;
    throw new AgentError("budget_exceeded", refusal.message, {
      retryable: true,
      retryAfterMs: refusal.retryAfterMs,
      fields: { resets_at: refusal.resetsAt },
    });
  }

  const runTurn = createTurnRunner({
    config,
    log,
    model,
    agent,
    tools,
    contextFor: contexts.forTurn,
    spend: budget ? (session, usage) => budget.spend(session.limitKey, usage) : undefined,
    admit: budget ? checkBudget : undefined,
  });
  const commands = createCommands({
    log,
    take: (session) => limits.take(session.rateKey),
    own: agent.commands ?? {},
    contextFor: contexts.forCommand,
  });
  const allowedModels = [...new Set([model.defaultModel, ...config.allowedModels])];
  const features = ["tools", "client_tools", "approval", "reasoning"];

  /** Why this process is handing its sessions over; null while it takes work. */
  let draining: string | null = null;

  function makeSession(id: string, who: SessionOwner, startSeq = 0): Session {
    const session: Session = new Session(
      id,
      store,
      config,
      who,
      // Once a turn has ended (and its queue moved on), a draining process may let go.
      (turn) => runTurn(session, turn).finally(() => draining && setTimeout(() => settle(session))),
      startSeq,
    );
    return session;
  }

  /** Says goodbye to a session's socket (clients reconnect and resume) and lets it go here. */
  function handOver(session: Session, reason: string, content: string): void {
    session.emit({ type: "notification", event: "shutdown", content, reason, reconnect: true });
    closeQuietly(session.socket, CLOSE.restart, "Server restart");
    // A durable session stays resumable in another process.
    endSession(session, store.durable ? "released" : "closed");
  }

  /**
   * While draining: hands a session over once nothing of it runs or waits
   * here — or, with a durable store, once its turn only waits for people (the
   * turn is checkpointed and carried on by the process that takes it over).
   */
  function settle(session: Session): void {
    if (!draining || session.closed || session.turns.waiting > 0) return;
    const turn = session.turns.inFlight;
    if (turn && !(store.durable && turn.waitingForPeople)) return;
    handOver(session, draining, "This server is handing over; reconnect");
  }

  const takeover = createTakeover({
    config,
    log,
    store,
    sessions,
    bus,
    instance: deps.instance,
    makeSession,
    release: (session) => endSession(session, "released"),
    admit: (key) => bounds.admit(key),
  });
  // Another process took a session over while this one still wrote to it (it looked
  // dead to the others): nothing of it is written from here any more, so let it go.
  store.onLost = (id) => {
    const session = sessions.get(id);
    if (!session) return;
    log.warn("session_lost", { session: id });
    if (session.socket) sayTakenOver(session.socket, id);
    endSession(session, "released");
  };
  bus?.subscribe((msg) => {
    takeover.onBus(msg).catch((err) => log.error("bus_message_failed", { err: String(err) }));
  }).catch((err) => log.error("bus_subscribe_failed", { err: String(err) }));

  /** Renders what a client frame's handling threw, as one error frame. */
  function reject(session: Session, err: unknown, id?: string): void {
    if (!(err instanceof AgentError)) {
      log.error("frame_handler_failed", { session: session.id, err: String(err).slice(0, 300) });
    }
    session.counters.errors++;
    session.emit(errorFrame(err, id));
  }

  function connectedFrame(session: Session) {
    const mode = config.simulator
      ? " [OFFLINE SIMULATOR: answers are simulated, no model is called]"
      : model.configured === false
      ? " [NOT CONFIGURED: OPENROUTER_API_KEY is not set; queries will fail]"
      : "";
    return {
      type: "notification" as const,
      event: "connected",
      content: `Connected to Agent WebSocket. Session ID: ${session.id}${mode}`,
      session_id: session.id,
      protocol: PROTOCOL_VERSION,
      agent: agent.name ?? config.agentName,
      model: model.defaultModel,
      models: allowedModels,
      simulator: config.simulator,
      features,
      tools: tools.describe(),
      commands: commands.names,
      limits: {
        max_message_bytes: config.maxMessageBytes,
        max_content_chars: config.maxContentChars,
        max_queue: config.maxQueue,
        rate_limit_per_minute: config.rateLimitPerMinute,
        rate_limit_burst: config.rateLimitBurst,
        max_history: config.maxHistory,
        max_tool_iterations: config.maxToolIterations,
      },
      heartbeat_ms: config.heartbeatSeconds * 1000,
      resume_window_ms: config.resumeWindowMs,
    };
  }

  function admit(session: Session, frame: QueryFrame, id: string): void {
    if (draining) {
      throw new AgentError("draining", "This server is handing over; reconnect and send it again", {
        retryable: true,
        retryAfterMs: 0,
      });
    }
    if (model.configured === false) {
      throw new AgentError(
        "not_configured",
        "The server has no OPENROUTER_API_KEY configured, so it cannot answer",
      );
    }
    if (frame.model !== undefined && !allowedModels.includes(frame.model)) {
      throw new AgentError("model_not_allowed", `Model is not allowed here: ${frame.model}`, {
        issues: [{ path: "model", message: `Allowed: ${allowedModels.join(", ")}` }],
      });
    }
    // Checked before the rate limit: a bad declaration must not cost a token.
    if (frame.tools) tools.forQuery(frame.tools);
    checkBudget(session);
    const wait = limits.take(session.rateKey);
    if (wait > 0) {
      throw new AgentError("rate_limited", "Too many queries; slow down", {
        retryable: true,
        retryAfterMs: wait,
      });
    }
    session.turns.submit({
      id,
      content: frame.content,
      model: frame.model,
      stream: frame.stream ?? true,
      metadata: frame.metadata ?? {},
      clientTools: frame.tools ?? [],
      receivedAt: performance.now(),
    });
  }

  /**
   * Ends this process's hold on a session. "closed" forgets it everywhere;
   * "released" keeps it in a durable store for another process to resume,
   * with its open queries left for that process to end as `interrupted`.
   */
  function endSession(session: Session, why: "closed" | "released"): Promise<void> {
    if (session.closed) return Promise.resolve();
    session.close(why);
    sessions.delete(session.id);
    limits.releaseSession(session.limitKey);
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

  /** Binds a socket and its user to a session. */
  function bind(session: Session, conn: Connection): void {
    session.attach(conn.socket);
    session.user = conn.user;
    session.token = conn.token;
    Object.assign(session.state, conn.state);
    conn.session = session;
  }

  const bounds = createSessionBounds({
    sessions,
    limits,
    store,
    log,
    maxSessions: config.maxSessions,
    replayMemoryBytes: config.replayMemoryBytes,
    end: (session) => endSession(session, "closed"),
  });

  function newSession(conn: Connection): Session | null {
    if (!bounds.admit(conn.limitKey)) {
      refuse(
        conn,
        new AgentError(
          "too_many_connections",
          `At most ${config.maxSessionsPerUser} sessions per user, all of them connected`,
        ),
      );
      return null;
    }
    bounds.enforce();
    const session = makeSession(crypto.randomUUID(), {
      owner: conn.user?.id ?? null,
      upstreamUser: conn.upstreamUser,
      limitKey: conn.limitKey,
    });
    store.create(session.id, session.owner);
    bind(session, conn);
    sessions.add(session);
    log.info("session_open", { session: session.id });
    session.emit(connectedFrame(session));
    return session;
  }

  async function resume(conn: Connection, req: ResumeRequest): Promise<void> {
    const found = sessions.get(req.sessionId) ??
      (store.durable
        ? await takeover.adopt(req, {
          owner: conn.user?.id ?? null,
          upstreamUser: conn.upstreamUser,
          limitKey: conn.limitKey,
        }).catch((err) => {
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
      if (!fresh) return;
      reject(
        fresh,
        new AgentError(plan.ok ? "not_found" : plan.code, plan.ok ? "" : plan.message),
      );
      return;
    }
    // From here to the end nothing awaits: no frame can be emitted between the
    // replay and the attach, so the client misses nothing and sees nothing twice.
    const previous = target.socket;
    if (previous && previous !== conn.socket) sayTakenOver(previous, target.id);
    bind(target, conn);
    sendSocketFrame(conn.socket, {
      type: "notification",
      event: "resumed",
      content: `Resumed session ${target.id}`,
      session_id: target.id,
      last_seq: req.lastSeq,
      replayed: plan.frames.length,
      resume_window_ms: config.resumeWindowMs,
    });
    for (const f of plan.frames) target.sendReplay(f.json);
    log.info("session_resumed", { session: target.id, replayed: plan.frames.length });
  }

  /** The id a rejected frame's error should carry: a query's or command's own. */
  function route(session: Session, data: unknown): void {
    session.lastActivity = Date.now();
    if (typeof data !== "string") {
      throw new AgentError(
        "unsupported_frame",
        "Binary frames are not supported; send JSON text",
      );
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
        throw new AgentError(
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
      case "query": {
        const id = frame.id ?? crypto.randomUUID();
        try {
          return admit(session, frame, id);
        } catch (err) {
          return reject(session, err, id);
        }
      }
      case "command":
        commands.command(session, frame).catch((err) => reject(session, err, frame.id));
        return;
      case "feedback":
        try {
          return commands.feedback(session, frame);
        } catch (err) {
          return reject(session, err, frame.id);
        }
      case "tool_result":
        return session.turns.answer(frame.id, frame.tool_call_id, {
          kind: "tool_result",
          result: frame.result,
          error: frame.error,
        });
      case "approval":
        return session.turns.answer(frame.id, frame.tool_call_id, {
          kind: "approval",
          approved: frame.approved,
          reason: frame.reason,
        });
    }
  }

  function dispatch(session: Session, data: unknown): void {
    try {
      route(session, data);
    } catch (err) {
      // Tool answers name their call, not the query: an error with a query's id would end it.
      reject(session, err);
    }
  }

  /**
   * A socket lives as long as its access token (with the same leeway the
   * verification gives): then `token_expired` and close 4003, which tells the
   * SDK to fetch a fresh token and resume.
   */
  function watchExpiry(conn: Connection): void {
    const at = conn.user?.expiresAt;
    if (at === undefined || conn.socket.readyState !== WebSocket.OPEN) return;
    const ms = Math.max(0, at + (config.auth?.leewaySeconds ?? 30) * 1000 - Date.now());
    conn.expiry = setTimeout(() => {
      log.info("token_expired", { session: conn.session?.id });
      sendSocketFrame(conn.socket, {
        type: "error",
        code: "token_expired",
        message: "Your access token expired; reconnect with a fresh one to resume",
        retryable: true,
      });
      closeQuietly(conn.socket, CLOSE.tokenExpired, "Token expired");
    }, Math.min(ms, 2 ** 31 - 1));
    // Under plain Deno a pending expiry alone must not keep the process alive.
    if (typeof Deno.unrefTimer === "function") Deno.unrefTimer(conn.expiry);
  }

  /** Tells a socket why the deployer's `onConnect` refused it, and closes it. */
  function refuse(conn: Connection, err: unknown): void {
    if (!(err instanceof AgentError)) {
      log.error("on_connect_failed", { err: String(err).slice(0, 300) });
    } else log.info("connection_refused", { code: err.code });
    sendSocketFrame(conn.socket, errorFrame(err));
    closeQuietly(conn.socket, ...refusalClose(err));
  }

  return {
    model,

    onConnect(socket, url, who, address) {
      const parsed = parseResumeRequest(url);
      return {
        socket,
        url,
        user: who?.user ?? null,
        token: who?.token ?? null,
        upstreamUser: who?.upstreamUser,
        limitKey: who ? who.user.id : `addr:${address ?? "unknown"}`,
        state: {},
        session: null,
        resume: parsed && !("error" in parsed) ? parsed : null,
        badResume: parsed && "error" in parsed ? parsed.error : null,
        inbox: [],
      };
    },

    async onOpen(conn) {
      if (agent.onConnect) {
        try {
          await agent.onConnect(contexts.forConnect(conn, conn.url, conn.resume !== null));
        } catch (err) {
          return refuse(conn, err);
        }
        if (conn.socket.readyState !== WebSocket.OPEN) return;
      }
      if (quota) {
        // So that a user's first query here is judged by what they did elsewhere.
        await quota.prime(conn.limitKey);
        if (conn.socket.readyState !== WebSocket.OPEN) return;
      }
      if (draining) {
        // A process that is handing over takes no one new: reconnect, and land elsewhere.
        sendSocketFrame(conn.socket, {
          type: "notification",
          event: "shutdown",
          content: "This server is handing over; reconnect",
          reason: draining,
          reconnect: true,
        });
        closeQuietly(conn.socket, CLOSE.restart, "Server restart");
        return;
      }
      if (conn.resume) await resume(conn, conn.resume);
      else {
        const session = newSession(conn);
        if (session && conn.badResume) {
          reject(session, new AgentError("invalid_message", conn.badResume));
        }
      }
      watchExpiry(conn);
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
      clearTimeout(conn.expiry);
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
        handOver(session, reason, "The server is restarting; reconnect");
      }
    },

    drain(reason) {
      if (!draining) {
        draining = reason;
        log.warn("draining", { reason, sessions: sessions.size, in_flight: sessions.inFlight });
      }
      // Called again while draining: turns that began to wait for people since may go now.
      for (const session of [...sessions.values()]) settle(session);
    },

    async notify(sessionId, note) {
      const local = sessions.get(sessionId);
      if (local) {
        local.emit(notificationFrame(note.event, note.content, note.data));
        return "delivered";
      }
      if (!bus || !(await store.load(sessionId))) return "not_found";
      await bus.publish({ kind: "notify", session: sessionId, from: deps.instance, ...note });
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
        () => {
          bounds.enforce();
          return store.maintain().catch((err) =>
            log.warn("store_upkeep_failed", { err: String(err) })
          );
        },
      );
      return () => sessions.stopSweeper();
    },
  };
}
