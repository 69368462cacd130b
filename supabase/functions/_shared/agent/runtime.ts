/**
 * The agent runtime: what happens when a socket connects, opens, sends a
 * frame, closes or fails — the deployer's `onConnect`; finding the session it
 * speaks for (new, resumed, or the named conversation it joins) and where
 * that session is held: here (the socket is attached to it), or on another
 * live process (the socket is relayed, session/relay.ts); expiry, draining
 * and shutdown. Client frames go to the router (agent/router.ts).
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
import { CLOSE, PROTOCOL_VERSION } from "../protocol/codes.ts";
import { AgentError, errorFrame } from "../protocol/errors.ts";
import { type Peer, Session, type SessionOwner } from "../session/session.ts";
import type { SessionRegistry, SweepReason } from "../session/registry.ts";
import {
  collectReplay,
  parseLastSeq,
  parseResumeRequest,
  type ResumeRequest,
} from "../session/resume.ts";
import { conversationSessionId, parseConversation } from "../session/conversation.ts";
import { createTakeover } from "../session/takeover.ts";
import { createSessionBounds } from "../session/bounds.ts";
import { createRemotePeers } from "../session/remote_peers.ts";
import { createRelays, type RelaySocket } from "../session/relay.ts";
import { closeQuietly, notificationFrame, sendSocketFrame } from "../session/socket.ts";
import { createTurnRunner } from "../turn/turn.ts";
import type { AgentDefinition, AgentUser } from "./definition.ts";
import { createCommands } from "./commands.ts";
import { createContexts } from "./context.ts";
import { createRouter } from "./router.ts";
import { ToolSet } from "./tools.ts";
import { builtinTools } from "./builtin_tools.ts";

/** One socket's view: the session it speaks for once that is known. */
export interface Connection {
  socket: WebSocket;
  /** This socket's id (`socket_id`): it names the socket within its session. */
  socketId: string;
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
  /** The session held here that the socket is attached to, once it is. */
  session: Session | null;
  /** The socket as its session knows it, once attached here. */
  peer: Peer | null;
  /** The id of the session held elsewhere that this socket is relayed to, if it is. */
  relayed: string | null;
  resume: ResumeRequest | null;
  /** The conversation asked for (`?conversation=`), if any. */
  conversation: string | null;
  /** Why the resume or conversation parameters were refused, if they were. */
  badResume: string | null;
  badConversation: string | null;
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

/** The frame a socket gets when another connection takes its (plain) session. */
function takenOverFrame(sessionId: string): Record<string, unknown> {
  return {
    type: "notification",
    event: "session_taken_over",
    content: "Another connection resumed this session",
    session_id: sessionId,
    seq: 0,
    timestamp: new Date().toISOString(),
  };
}

/** A short random socket id. */
function newSocketId(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 16);
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
  });
  const allowedModels = [...new Set([model.defaultModel, ...config.allowedModels])];
  const features = ["tools", "client_tools", "approval", "reasoning", "conversations", "memory"];

  /** Why this process is handing its sessions over; null while it takes work. */
  let draining: string | null = null;

  const router = createRouter({
    config,
    log,
    limits,
    model,
    tools,
    commands,
    allowedModels,
    draining: () => draining,
    checkBudget,
  });

  function makeSession(id: string, who: SessionOwner, startSeq = 0): Session {
    const session: Session = new Session(
      id,
      store,
      config,
      who,
      // Once a turn has ended (and its queue moved on), the session may move on too.
      (turn) =>
        runTurn(session, turn).finally(() =>
          setTimeout(() => draining ? settle(session) : handOffIfIdle(session))
        ),
      startSeq,
    );
    return session;
  }

  /** Tells the whole conversation how many sockets it has now. */
  function presence(session: Session, joined: Peer | null, left: Peer | null): void {
    if (session.conversation === null || session.closed) return;
    const n = session.peers.size;
    session.emit({
      type: "notification",
      event: "presence",
      content: `${n} socket${n === 1 ? "" : "s"} attached`,
      sockets: n,
      ...(joined ? { joined: joined.id } : {}),
      ...(left ? { left: left.id } : {}),
    });
  }

  /** A plain session has one socket: the newest takes it, the others are told and closed. */
  function takeOverOthers(session: Session, newest: string): void {
    if (session.conversation !== null) return;
    for (const peer of [...session.peers.values()]) {
      if (peer.id === newest) continue;
      session.detach(peer.id);
      peer.close(CLOSE.takenOver, "Session taken over", takenOverFrame(session.id));
    }
  }

  /** Says goodbye to the sockets here (they reconnect and resume) and lets the session go. */
  function handOver(session: Session, reason: string, content: string): void {
    const goodbye = {
      type: "notification" as const,
      event: "shutdown",
      content,
      reason,
      reconnect: true,
    };
    const local = [...session.peers.values()].filter((p) => p.ws);
    if (session.conversation === null) {
      if (local.length > 0) session.emit(goodbye);
    } else for (const peer of local) session.emit(goodbye, peer);
    for (const peer of local) peer.close(CLOSE.restart, "Server restart");
    // A durable session stays resumable in another process; a conversation is kept.
    endSession(session, store.durable || session.conversation !== null ? "released" : "closed");
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

  /**
   * A session whose sockets are all on one other process, with nothing
   * running: that process takes it (one hop less for every frame).
   */
  function handOffIfIdle(session: Session): void {
    if (!bus || draining || session.closed || session.turns.inFlight) return;
    if (session.turns.waiting > 0 || session.peers.size === 0) return;
    const where = session.remoteInstances();
    if (where.size !== 1 || [...session.peers.values()].some((p) => p.ws)) return;
    log.info("session_handoff", { session: session.id, to: [...where][0] });
    endSession(session, "released");
  }

  const takeover = createTakeover({
    config,
    log,
    store,
    sessions,
    makeSession,
    admit: (key) => bounds.admit(key),
  });

  const remotePeers = bus
    ? createRemotePeers({
      log,
      bus,
      sessions,
      instance: me,
      joined(session, peer, fresh) {
        takeOverOthers(session, peer.id);
        const start = session.seq;
        session.attach(peer);
        if (fresh) session.emit(connectedFrame(session, peer), peer);
        presence(session, peer, null);
        return start;
      },
      left: (session, peer) => afterLeave(session, peer),
      received: (session, peer, data) => router.dispatch(session, data, peer),
    })
    : null;

  /** Connections of sockets relayed to sessions held elsewhere, by socket id. */
  const relayedConns = new Map<string, Connection>();
  const relays = bus
    ? createRelays({
      log,
      bus,
      store,
      instance: me,
      adopt: (rec, sockets) => adoptRelayed(rec.id, rec.holder, sockets),
    })
    : null;

  if (remotePeers) store.onCommitted = (frames) => remotePeers.committed(frames);
  // Another process took a session over while this one still wrote to it (it looked
  // dead to the others): nothing of it is written from here any more, so let it go.
  store.onLost = (id) => {
    const session = sessions.get(id);
    if (!session) return;
    log.warn("session_lost", { session: id });
    for (const peer of [...session.peers.values()]) {
      if (!peer.ws) continue;
      if (session.conversation === null) {
        peer.close(CLOSE.takenOver, "Session taken over", takenOverFrame(id));
      } else {
        // Its sockets rejoin through whichever process holds it now.
        peer.close(CLOSE.restart, "Server restart", {
          type: "notification",
          event: "shutdown",
          content: "This conversation moved to another server; reconnect",
          reason: "session_moved",
          reconnect: true,
          seq: 0,
          timestamp: new Date().toISOString(),
        });
      }
    }
    endSession(session, "released", false);
  };

  function onBus(msg: BusMessage): void {
    if (msg.from === me) return;
    remotePeers?.onBus(msg);
    relays?.onBus(msg);
    const session = sessions.get(msg.session);
    if (!session || session.closed) return;
    if (msg.kind === "notify") {
      session.emit(notificationFrame(msg.event, msg.content, msg.data));
    } else if (msg.kind === "cleared") {
      store.clearHistory(session.id).catch(() => {});
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
    (about) =>
      about.to !== undefined
        ? about.to === me
        : sessions.get(about.session) !== undefined || (relays?.wants(about.session) ?? false),
  ).catch((err) => log.error("bus_subscribe_failed", { err: String(err) }));

  function connectedFrame(session: Session, peer?: Peer) {
    const mode = config.simulator
      ? " [OFFLINE SIMULATOR: answers are simulated, no model is called]"
      : model.configured === false
      ? " [NOT CONFIGURED: OPENROUTER_API_KEY is not set; queries will fail]"
      : "";
    return {
      type: "notification" as const,
      event: "connected",
      content: session.conversation === null
        ? `Connected to Agent WebSocket. Session ID: ${session.id}${mode}`
        : `Connected to Agent WebSocket. Conversation: ${session.conversation}${mode}`,
      session_id: session.id,
      ...(session.conversation === null ? {} : {
        conversation: session.conversation,
        socket_id: peer?.id,
        sockets: session.peers.size,
      }),
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

  /**
   * Ends this process's hold on a session. "closed" forgets it everywhere;
   * "released" keeps it in the store for another process (or a later join of
   * a conversation), with its open queries left for whoever takes it to end
   * as `interrupted` — and tells the processes relaying it, which take it.
   */
  function endSession(session: Session, why: "closed" | "released", announce = true) {
    if (session.closed) return Promise.resolve();
    session.close(why);
    sessions.delete(session.id);
    limits.releaseSession(session.limitKey);
    limits.forget(session.rateKey);
    const done = why === "released" ? store.release(session.id) : store.delete(session.id);
    return done.then(() => {
      if (why === "released" && announce && bus && store.durable) {
        return bus.publish({ kind: "released", session: session.id, from: me });
      }
    }).catch((err) => log.warn("store_end_failed", { session: session.id, why, err: String(err) }));
  }

  /** A socket left: presence, and what becomes of a session nobody watches. */
  function afterLeave(session: Session, peer: Peer): void {
    presence(session, null, peer);
    if (session.peers.size === 0 && config.resumeWindowMs <= 0) {
      log.info("session_close", { session: session.id });
      endSession(session, session.conversation === null ? "closed" : "released");
      return;
    }
    if (draining) settle(session);
    else handOffIfIdle(session);
  }

  function expire(session: Session, why: SweepReason): void {
    const keep = session.conversation !== null ? "released" : "closed";
    if (why === "resume_window") {
      log.info("session_expired", { session: session.id });
      endSession(session, keep);
    } else if (why === "idle") {
      log.info("session_timeout", { session: session.id });
      session.emit({
        type: "notification",
        event: "session_timeout",
        content: "Session closed due to inactivity",
      });
      for (const peer of [...session.peers.values()]) {
        peer.close(CLOSE.normal, "Session timeout");
      }
      endSession(session, keep);
    } else {
      const now = Date.now();
      for (const peer of [...session.peers.values()]) {
        if (!peer.ws || now - (peer.attachedAt ?? now) <= config.maxConnectionAgeMs) continue;
        log.info("connection_max_age", { session: session.id, socket: peer.id });
        session.emit({
          type: "notification",
          event: "shutdown",
          content: "Connection reached its maximum age; reconnect",
          reason: "max_connection_age",
          reconnect: true,
        }, peer);
        peer.close(CLOSE.restart, "Maximum connection age");
      }
    }
  }

  /** The socket as a session holds it here. */
  function localPeer(conn: Connection, sentUpTo: number): Peer {
    const ws = conn.socket;
    return {
      id: conn.socketId,
      ws,
      instance: null,
      sentUpTo,
      attachedAt: Date.now(),
      close(code, reason, say) {
        if (say) sendSocketFrame(ws, say);
        closeQuietly(ws, code, reason);
      },
    };
  }

  /** Binds a socket and its user to a session. */
  function bind(session: Session, conn: Connection, peer: Peer): void {
    session.attach(peer);
    session.user = conn.user;
    session.token = conn.token;
    Object.assign(session.state, conn.state);
    conn.session = session;
    conn.peer = peer;
  }

  const bounds = createSessionBounds({
    sessions,
    limits,
    store,
    log,
    maxSessions: config.maxSessions,
    replayMemoryBytes: config.replayMemoryBytes,
    end: (session) => endSession(session, session.conversation === null ? "closed" : "released"),
  });

  function ownerOf(conn: Connection): SessionOwner {
    return {
      owner: conn.user?.id ?? null,
      upstreamUser: conn.upstreamUser,
      limitKey: conn.limitKey,
      conversation: conn.conversation,
    };
  }

  function tooMany(conn: Connection): void {
    refuse(
      conn,
      new AgentError(
        "too_many_connections",
        `At most ${config.maxSessionsPerUser} sessions per user, all of them connected`,
      ),
    );
  }

  function newSession(conn: Connection): Session | null {
    if (!bounds.admit(conn.limitKey)) {
      tooMany(conn);
      return null;
    }
    bounds.enforce();
    const session = makeSession(crypto.randomUUID(), { ...ownerOf(conn), conversation: null });
    store.create(session.id, session.owner);
    bind(session, conn, localPeer(conn, 0));
    sessions.add(session);
    log.info("session_open", { session: session.id });
    session.emit(connectedFrame(session));
    return session;
  }

  /**
   * Attaches a socket to a session held here: resuming after `lastSeq`
   * (every frame after it once, then live) or joining fresh. False when the
   * socket cannot have it (another user's, or a plain session's replay has a
   * hole); `gap` then says why.
   */
  async function attachHere(
    session: Session,
    conn: Connection,
    lastSeq: number | null,
  ): Promise<{ ok: true } | { ok: false; code: "not_found" | "resume_gap"; message: string }> {
    // Another user's session is reported exactly like a missing one: nothing leaks.
    if (session.owner !== (conn.user?.id ?? null)) {
      return { ok: false, code: "not_found", message: "Unknown session" };
    }
    let plan = lastSeq === null ? null : await collectReplay(session, lastSeq);
    if (conn.socket.readyState !== WebSocket.OPEN) return { ok: true };
    if (session.closed) return { ok: false, code: "not_found", message: "The session ended" };
    if (plan && !plan.ok) {
      if (session.conversation === null) return plan;
      // A conversation goes on; the socket is told what it missed cannot be replayed.
      sendSocketFrame(conn.socket, errorFrame(new AgentError(plan.code, plan.message)));
      plan = null;
    }
    // From here to the end nothing awaits: no frame can be emitted between the
    // replay and the attach, so the client misses nothing and sees nothing twice.
    const peer = localPeer(conn, plan ? lastSeq! : session.seq);
    takeOverOthers(session, peer.id);
    if (plan?.ok) {
      sendSocketFrame(conn.socket, {
        type: "notification",
        event: "resumed",
        content: `Resumed session ${session.id}`,
        session_id: session.id,
        ...(session.conversation === null
          ? {}
          : { conversation: session.conversation, socket_id: peer.id }),
        last_seq: lastSeq,
        replayed: plan.frames.length,
        resume_window_ms: config.resumeWindowMs,
      });
      session.sendReplay(peer, plan.frames);
      log.info("session_resumed", { session: session.id, replayed: plan.frames.length });
    }
    bind(session, conn, peer);
    if (!plan) session.emit(connectedFrame(session, peer), peer);
    presence(session, peer, null);
    return { ok: true };
  }

  /**
   * Takes a session another process held (or a conversation kept in the
   * store) and attaches the relayed sockets to it here, each continuing after
   * what it was sent.
   */
  async function adoptRelayed(
    id: string,
    holder: string | null,
    sockets: RelaySocket[],
  ): Promise<boolean> {
    const conns = sockets.map((s) => relayedConns.get(s.id)).filter((c) => c !== undefined);
    if (conns.length === 0) return true;
    const first = conns[0];
    const last = Math.max(...sockets.map((s) => s.lastSent));
    const session = sessions.get(id) ??
      await takeover.adopt(id, holder, ownerOf(first), last);
    if (!session) return false;
    for (const sock of sockets) {
      const conn = relayedConns.get(sock.id);
      if (!conn) continue;
      relayedConns.delete(sock.id);
      conn.relayed = null;
      if (conn.socket.readyState !== WebSocket.OPEN) continue;
      const plan = await collectReplay(session, sock.lastSent);
      if (!plan.ok || session.closed) {
        closeQuietly(conn.socket, CLOSE.restart, "Server restart");
        continue;
      }
      const peer = localPeer(conn, sock.lastSent);
      session.sendReplay(peer, plan.frames);
      bind(session, conn, peer);
    }
    return true;
  }

  /**
   * Finds the session a socket asks for and attaches the socket to it, where
   * it is held: here, elsewhere (relayed), or nowhere yet (adopted from the
   * store, or — for a conversation — created). Returns null once attached or
   * relayed, else why not.
   */
  async function enter(
    conn: Connection,
    id: string,
    lastSeq: number | null,
  ): Promise<null | { code: "not_found" | "resume_gap"; message: string }> {
    const owner = conn.user?.id ?? null;
    const missing = {
      code: "not_found" as const,
      message: "Unknown session, or its resume window has ended; starting a new session",
    };
    // A few rounds: another process may create, take or let go of it meanwhile.
    for (let round = 0; round < 4; round++) {
      const here = sessions.get(id);
      if (here && !here.closed) {
        const r = await attachHere(here, conn, lastSeq);
        return r.ok ? null : r;
      }
      if (draining) return missing;
      const rec = await store.load(id);
      if (conn.socket.readyState !== WebSocket.OPEN) return null;
      if (rec && rec.owner !== owner) return missing;
      if (rec) {
        if (rec.instance && rec.instance !== me && rec.instanceAlive && relays) {
          relayedConns.set(conn.socketId, conn);
          conn.relayed = id;
          const joined = await relays.join(rec, {
            id: conn.socketId,
            ws: conn.socket,
            lastSeq,
            resumed: (replayed) => ({
              type: "notification",
              event: "resumed",
              content: `Resumed session ${id}`,
              session_id: id,
              ...(rec.conversation === null
                ? {}
                : { conversation: rec.conversation, socket_id: conn.socketId }),
              last_seq: lastSeq,
              replayed,
              resume_window_ms: config.resumeWindowMs,
              seq: 0,
              timestamp: new Date().toISOString(),
            }),
          });
          if (joined) return null;
          relayedConns.delete(conn.socketId);
          conn.relayed = null;
        }
        if (sessions.get(id)) continue;
        // Lost a race for it (or the user holds too many): look again.
        await takeover.adopt(id, rec.instance, ownerOf(conn), lastSeq ?? 0);
        continue;
      }
      if (conn.conversation === null) return missing;
      if (!bounds.admit(conn.limitKey)) {
        tooMany(conn);
        return null;
      }
      if (await store.createHeld(id, owner, conn.conversation)) {
        bounds.enforce();
        const session = makeSession(id, ownerOf(conn));
        sessions.add(session);
        log.info("conversation_open", { session: id, conversation: conn.conversation });
      } else limits.releaseSession(conn.limitKey);
    }
    log.warn("enter_gave_up", { session: id });
    return missing;
  }

  /**
   * A socket asks for a named conversation or resumes a plain session. A plain
   * session that cannot be resumed is replaced by a fresh one that says why.
   */
  async function open(conn: Connection): Promise<void> {
    if (conn.conversation !== null) {
      const id = await conversationSessionId(conn.user?.id ?? null, conn.conversation);
      const lastSeq = conn.resume?.lastSeq ?? null;
      const failed = await enter(conn, id, lastSeq);
      if (failed && conn.socket.readyState === WebSocket.OPEN) {
        refuse(
          conn,
          new AgentError("internal_error", "This conversation cannot be joined now; retry", {
            retryable: true,
          }),
        );
      }
      return;
    }
    if (!conn.resume) {
      const session = newSession(conn);
      if (session && conn.badResume) {
        router.reject(session, new AgentError("invalid_message", conn.badResume));
      }
      return;
    }
    const failed = await enter(conn, conn.resume.sessionId, conn.resume.lastSeq).catch((err) => {
      log.error("resume_failed", { session: conn.resume!.sessionId, err: String(err) });
      return {
        code: "not_found" as const,
        message: "Unknown session, or its resume window has ended; starting a new session",
      };
    });
    if (!failed || conn.socket.readyState !== WebSocket.OPEN) return;
    log.info("resume_refused", { session: conn.resume.sessionId, code: failed.code });
    const fresh = newSession(conn);
    if (fresh) router.reject(fresh, new AgentError(failed.code, failed.message));
  }

  /** Whether a socket asks for a session this (draining) process still holds. */
  async function heldHere(conn: Connection): Promise<boolean> {
    if (conn.conversation !== null) {
      return sessions.get(await conversationSessionId(conn.user?.id ?? null, conn.conversation)) !==
        undefined;
    }
    return conn.resume !== null && sessions.get(conn.resume.sessionId) !== undefined;
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
      log.info("token_expired", { session: conn.session?.id ?? conn.relayed });
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

  /** Tells a socket why it was refused, and closes it. */
  function refuse(conn: Connection, err: unknown): void {
    if (!(err instanceof AgentError)) {
      log.error("on_connect_failed", { err: String(err).slice(0, 300) });
    } else log.info("connection_refused", { code: err.code });
    sendSocketFrame(conn.socket, errorFrame(err));
    closeQuietly(conn.socket, ...refusalClose(err));
  }

  /** Sends a socket on to another process: this one is handing over. */
  function redirect(conn: Connection): void {
    sendSocketFrame(conn.socket, {
      type: "notification",
      event: "shutdown",
      content: "This server is handing over; reconnect",
      reason: draining,
      reconnect: true,
    });
    closeQuietly(conn.socket, CLOSE.restart, "Server restart");
  }

  /** A client frame on a socket relayed to another process: checked here, handled there. */
  function forward(conn: Connection, data: unknown): void {
    if (typeof data !== "string") {
      sendSocketFrame(conn.socket, {
        type: "error",
        code: "unsupported_frame",
        message: "Binary frames are not supported; send JSON text",
        retryable: false,
      });
      return;
    }
    if (data.length * 3 > config.hardMaxMessageBytes) {
      if (encoder.encode(data).length > config.hardMaxMessageBytes) {
        closeQuietly(conn.socket, CLOSE.tooLarge, "Message too large");
        return;
      }
    }
    relays?.forward(conn.relayed!, conn.socketId, data);
  }

  function onMessage(conn: Connection, data: unknown): void {
    if (conn.relayed) return forward(conn, data);
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
    router.dispatch(session, data, peer);
  }

  return {
    model,

    onConnect(socket, url, who, address) {
      const conversation = parseConversation(url);
      // A conversation is named, not numbered: `last_seq` alone resumes it.
      const named = typeof conversation === "string";
      const seq = named ? parseLastSeq(url) : null;
      const parsed = named
        ? (seq === null ? null : typeof seq === "number" ? { sessionId: "", lastSeq: seq } : seq)
        : parseResumeRequest(url);
      return {
        socket,
        socketId: newSocketId(),
        url,
        user: who?.user ?? null,
        token: who?.token ?? null,
        upstreamUser: who?.upstreamUser,
        limitKey: who ? who.user.id : `addr:${address ?? "unknown"}`,
        state: {},
        session: null,
        peer: null,
        relayed: null,
        resume: parsed && !("error" in parsed) ? parsed : null,
        conversation: named ? conversation : null,
        badResume: parsed && "error" in parsed ? parsed.error : null,
        badConversation: conversation !== null && !named ? conversation.error : null,
        inbox: [],
      };
    },

    async onOpen(conn) {
      if (conn.badConversation || (conn.conversation !== null && conn.badResume)) {
        return refuse(
          conn,
          new AgentError("invalid_message", conn.badConversation ?? conn.badResume!),
        );
      }
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
      // A process that is handing over serves the sessions it still holds and sends
      // everyone else on, so they land on a process that stays.
      if (draining && !(await heldHere(conn))) return redirect(conn);
      try {
        await open(conn);
      } catch (err) {
        log.error("open_failed", { err: String(err).slice(0, 300) });
        if (!conn.session && !conn.relayed) return refuse(conn, err);
      }
      watchExpiry(conn);
      // Frames that arrived while the session was being found are handled in order.
      const inbox = conn.inbox.splice(0);
      for (const data of inbox) onMessage(conn, data);
      if (draining && conn.session) settle(conn.session);
    },

    onMessage,

    onClose(conn, code, reason) {
      clearTimeout(conn.expiry);
      if (conn.relayed) {
        relays?.leave(conn.relayed, conn.socketId);
        relayedConns.delete(conn.socketId);
        conn.relayed = null;
      }
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
      afterLeave(session, peer);
    },

    onError(conn, err) {
      log.warn("socket_error", {
        session: conn.session?.id ?? conn.relayed,
        err: err instanceof ErrorEvent ? err.message : String(err),
      });
    },

    shutdown(reason) {
      for (const session of [...sessions.values()]) {
        handOver(session, reason, "The server is restarting; reconnect");
      }
      relays?.closeAll(
        {
          type: "notification",
          event: "shutdown",
          content: "The server is restarting; reconnect",
          reason,
          reconnect: true,
          seq: 0,
          timestamp: new Date().toISOString(),
        },
        CLOSE.restart,
        "Server restart",
      );
      relays?.stop();
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
        expire,
        () => {
          bounds.enforce();
          remotePeers?.prune();
          return store.maintain().catch((err) =>
            log.warn("store_upkeep_failed", { err: String(err) })
          );
        },
      );
      return () => {
        sessions.stopSweeper();
        relays?.stop();
      };
    },
  };
}
