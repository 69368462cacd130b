/**
 * The agent runtime: what happens when a socket connects, opens, sends a
 * frame, closes or fails, and what the process does as a whole (drain,
 * shutdown, sweep, notify). It puts the pieces together: the deployer's
 * `onConnect`, placement (which session, held where: agent/placement.ts),
 * the router for client frames (agent/router.ts), how sessions leave
 * (agent/handover.ts) and the bus between processes.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { UserLimits } from "../platform/limits.ts";
import type { DailyBudget } from "../platform/budget.ts";
import type { Quota } from "../store/quota.ts";
import type { SessionStore } from "../store/store.ts";
import type { Bus, BusMessage } from "../store/bus.ts";
import type { ModelBackend } from "../model/model.ts";
import { CLOSE } from "../protocol/codes.ts";
import { AgentError } from "../protocol/errors.ts";
import { Session, type SessionOwner } from "../session/session.ts";
import type { SessionRegistry } from "../session/registry.ts";
import { createTakeover } from "../session/takeover.ts";
import { createSessionBounds } from "../session/bounds.ts";
import { notificationFrame } from "../session/socket.ts";
import { createTurnRunner } from "../turn/turn.ts";
import type { AgentDefinition } from "./definition.ts";
import { createCommands } from "./commands.ts";
import { createContexts } from "./context.ts";
import { createRouter } from "./router.ts";
import { createGreeting } from "./greeting.ts";
import { createHandover } from "./handover.ts";
import { createPlacement } from "./placement.ts";
import {
  type Connection,
  type Identity,
  newConnection,
  redirect,
  refuse,
  watchExpiry,
} from "./connection.ts";
import { ToolSet } from "./tools.ts";
import { builtinTools } from "./builtin_tools.ts";

export type { Connection, Identity } from "./connection.ts";

/** The lifecycle hooks the server wires sockets to. */
export interface AgentRuntime {
  /** The model backend in use. */
  readonly model: ModelBackend;
  /**
   * Called at upgrade time, with the URL the client connected to, who it is
   * (with auth on) and where it connects from.
   */
  onConnect(socket: WebSocket, url: URL, who?: Identity, address?: string): Connection;
  /** Runs `onConnect`, starts, resumes or joins the session; resolves once it is ready. */
  onOpen(conn: Connection): Promise<void>;
  onMessage(conn: Connection, data: unknown): void;
  onClose(conn: Connection, code: number, reason: string): void;
  onError(conn: Connection, err: unknown): void;
  /** Sends `shutdown` and closes every socket with 1012 so clients reconnect. */
  shutdown(reason: string): void;
  /**
   * Stops taking new work here (a planned stop, the isolate's CPU budget):
   * each session is handed over — `shutdown` + 1012 to its sockets here,
   * released to the store for its sockets elsewhere — as soon as its answer
   * in flight has ended, never in the middle of one. Reconnects that land
   * here meanwhile are served (their session is held here) or sent on.
   * Calling it again hands over what has become idle since.
   */
  drain(reason: string): void;
  /**
   * Resolves once every session this process let go of is written as let go
   * and announced to the processes relaying it: the store may close then.
   */
  ended(): Promise<void>;
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
  const me = deps.instance;
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
    // The processes holding cleared conversations drop what they cached of them.
    onMemoryCleared: (ids) => {
      for (const id of ids) {
        bus?.publish({ kind: "cleared", session: id, from: me }).catch((err) =>
          log.warn("bus_publish_failed", { kind: "cleared", err: String(err).slice(0, 300) })
        );
      }
    },
  });
  const allowedModels = [...new Set([model.defaultModel, ...config.allowedModels])];
  const greeting = createGreeting({
    config,
    model,
    agent,
    tools,
    commands: commands.names,
    allowedModels,
  });
  /** What the pieces that move sessions between processes all need. */
  const core = { config, log, store, bus, sessions, limits, instance: me };
  const handover = createHandover({
    ...core,
    // Bound late: the relays' side is wired below, and only asked once a session goes.
    letGo: (id) => placement.letGo(id),
  });
  const router = createRouter({
    config,
    log,
    limits,
    model,
    tools,
    commands,
    allowedModels,
    draining: () => handover.draining,
    checkBudget,
  });

  function makeSession(id: string, who: SessionOwner, startSeq = 0): Session {
    const session: Session = new Session(
      id,
      store,
      config,
      who,
      // Once a turn has ended (and its queue moved on), the session may move on too.
      (turn) => runTurn(session, turn).finally(() => setTimeout(() => handover.moveOn(session))),
      startSeq,
    );
    return session;
  }

  const bounds = createSessionBounds({
    sessions,
    limits,
    store,
    log,
    maxSessions: config.maxSessions,
    replayMemoryBytes: config.replayMemoryBytes,
    end: (session) => handover.let(session),
  });
  const takeover = createTakeover({
    config,
    log,
    store,
    sessions,
    makeSession,
    admit: (key) => bounds.admit(key),
  });
  const placement = createPlacement({
    ...core,
    bounds,
    takeover,
    handover,
    router,
    greeting,
    makeSession,
    redeliver: (conn, data, retry) => onMessage(conn, data, retry),
  });

  function onBus(msg: BusMessage): void {
    if (msg.from === me) return;
    placement.onBus(msg);
    const session = sessions.get(msg.session);
    if (!session || session.closed) return;
    if (msg.kind === "notify") {
      session.emit(notificationFrame(msg.event, msg.content, msg.data));
    } else if (msg.kind === "cleared") {
      store.forgetHistory([session.id]).catch(() => {});
    }
  }
  bus?.subscribe(
    (msg) => {
      try {
        onBus(msg);
      } catch (err) {
        log.error("bus_message_failed", { kind: msg.kind, err: String(err).slice(0, 300) });
      }
    },
    (about) => about.to !== undefined ? about.to === me : placement.wants(about.session),
  ).catch((err) => log.error("bus_subscribe_failed", { err: String(err) }));

  function onMessage(conn: Connection, data: unknown, retry = false): void {
    if (conn.relayed) return placement.forward(conn, data, retry);
    const session = conn.session;
    if (!session) {
      if (conn.inbox.push(data) > MAX_INBOX) {
        conn.socket.close(CLOSE.policy, "Too many frames before the session was ready");
      }
      return;
    }
    // A socket whose session was taken over, or that ended, has no say any more.
    const peer = conn.peer;
    if (session.closed || !peer || session.peers.get(peer.id) !== peer) return;
    router.dispatch(session, data, peer, retry);
  }

  return {
    model,

    onConnect: newConnection,

    async onOpen(conn) {
      if (conn.badConversation || (conn.conversation !== null && conn.badResume)) {
        const message = conn.badConversation ?? conn.badResume!;
        return refuse(conn, new AgentError("invalid_message", message), log);
      }
      if (agent.onConnect) {
        try {
          await agent.onConnect(contexts.forConnect(conn, conn.url, conn.resume !== null));
        } catch (err) {
          return refuse(conn, err, log);
        }
        if (conn.socket.readyState !== WebSocket.OPEN) return;
      }
      if (quota) {
        // So that a user's first query here is judged by what they did elsewhere.
        await quota.prime(conn.limitKey);
        if (conn.socket.readyState !== WebSocket.OPEN) return;
      }
      // A process that is handing over serves the sessions it still holds and sends
      // everyone else on, so they land on a process that stays.
      const draining = handover.draining;
      if (draining && !(await placement.heldHere(conn))) return redirect(conn, draining);
      try {
        await placement.place(conn);
      } catch (err) {
        log.error("open_failed", { err: String(err).slice(0, 300) });
        if (!conn.session && !conn.relayed) return refuse(conn, err, log);
      }
      watchExpiry(conn, config, log);
      // Frames that arrived while the session was being found are handled in order.
      for (const data of conn.inbox.splice(0)) onMessage(conn, data);
      if (conn.session) handover.moveOn(conn.session);
    },

    onMessage,

    onClose(conn, code, reason) {
      clearTimeout(conn.expiry);
      placement.leave(conn);
      const session = conn.session;
      const peer = conn.peer;
      // Deno keeps a closed socket (and so its listeners and this connection) until its
      // idle-timeout timer fires; cutting the links here lets the session go at once.
      conn.session = null;
      conn.peer = null;
      conn.inbox = [];
      if (!session || !peer || session.peers.get(peer.id) !== peer) return;
      session.detach(peer.id);
      if (session.closed) return;
      if (session.peers.size === 0) {
        log.info("session_detached", { session: session.id, code, reason: reason.slice(0, 120) });
      }
      handover.afterLeave(session, peer);
    },

    onError(conn, err) {
      log.warn("socket_error", {
        session: conn.session?.id ?? conn.relayed,
        err: err instanceof ErrorEvent ? err.message : String(err),
      });
    },

    shutdown(reason) {
      for (const session of [...sessions.values()]) {
        handover.handOver(session, reason, "The server is restarting; reconnect");
      }
      placement.closeRelays(reason);
    },

    drain(reason) {
      handover.drain(reason);
    },

    ended: () => handover.ended(),

    async notify(sessionId, note) {
      const local = sessions.get(sessionId);
      if (local) {
        local.emit(notificationFrame(note.event, note.content, note.data));
        return "delivered";
      }
      if (!bus || !(await store.load(sessionId))) return "not_found";
      await bus.publish({ kind: "notify", session: sessionId, from: me, ...note });
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
        handover.expire,
        () => {
          bounds.enforce();
          placement.prune();
          return store.maintain().catch((err) =>
            log.warn("store_upkeep_failed", { err: String(err) })
          );
        },
      );
      return () => sessions.stopSweeper();
    },
  };
}
