/**
 * Where a socket's session is held, and attaching the socket to it: a new
 * session here; a session (or named conversation) held here — attached, its
 * replay sent; held by another live process — relayed (session/relay.ts);
 * held by nobody or a dead process — adopted from the store; a conversation
 * nobody has yet — created. It also answers, as the holder, for sockets other
 * processes relay to sessions held here (session/remote_peers.ts).
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { UserLimits } from "../platform/limits.ts";
import { type SessionStore, StoreError } from "../store/store.ts";
import type { Bus, BusMessage } from "../store/bus.ts";
import { CLOSE } from "../protocol/codes.ts";
import { AgentError, errorFrame } from "../protocol/errors.ts";
import { frameBytes } from "../protocol/frames.ts";
import type { Peer, Session, SessionOwner } from "../session/session.ts";
import type { SessionRegistry } from "../session/registry.ts";
import type { SessionBounds } from "../session/bounds.ts";
import type { Takeover } from "../session/takeover.ts";
import { collectReplay } from "../session/resume.ts";
import { conversationSessionId } from "../session/conversation.ts";
import { keepNewest, localPeer, presence } from "../session/peers.ts";
import { createRemotePeers } from "../session/remote_peers.ts";
import { createRelays, type RelaySocket } from "../session/relay.ts";
import { closeQuietly, sendSocketFrame, shutdownFrame, takenOverFrame } from "../session/socket.ts";
import { type Connection, redirect, refuse } from "./connection.ts";
import type { Handover } from "./handover.ts";
import type { Router } from "./router.ts";
import type { Greeting } from "./greeting.ts";

/** What placement needs. */
export interface PlacementDeps {
  config: Config;
  log: Logger;
  store: SessionStore;
  bus?: Bus;
  sessions: SessionRegistry;
  limits: UserLimits;
  bounds: SessionBounds;
  takeover: Takeover;
  handover: Handover;
  router: Router;
  greeting: Greeting;
  /** This process's id on the bus. */
  instance: string;
  makeSession(id: string, who: SessionOwner, startSeq?: number): Session;
  /**
   * Handles a client frame of a socket again (its holder let go or went
   * silent before handling it); `retry`: it may have been handled after all.
   */
  redeliver(conn: Connection, data: string, retry: boolean): void;
}

/** See {@linkcode createPlacement}. */
export interface Placement {
  /** Finds or makes the socket's session and attaches the socket to it (or relays it). */
  place(conn: Connection): Promise<void>;
  /** Whether a socket asks for a session this process holds (a draining one serves those). */
  heldHere(conn: Connection): Promise<boolean>;
  /** A client frame on a relayed socket: checked here, handled by the holder. */
  forward(conn: Connection, data: unknown, retry?: boolean): void;
  /**
   * This process lets go of a session: per relaying process, the last client
   * frame handled here (what `released` tells them).
   */
  letGo(sessionId: string): Record<string, number>;
  /** The socket closed. */
  leave(conn: Connection): void;
  /** A bus message for the relays and remote peers. */
  onBus(msg: BusMessage): void;
  /** Whether a message sent by reference concerns a session relayed or held here. */
  wants(sessionId: string): boolean;
  /** Drops remote sockets whose relay went silent (from the sweeper). */
  prune(): void;
  /** This process stops: relayed sockets are told and closed (they reconnect elsewhere). */
  closeRelays(reason: string): void;
}

/** Why a socket could not have the session it asked for. */
type Refusal = { code: "not_found" | "resume_gap"; message: string };

/** The session moved on while the socket was being attached: look for it again. */
const MOVED = "moved";

/**
 * @example
 * ```ts ignore
 * const placement = createPlacement({ config, log, store, bus, sessions, limits, bounds,
 *   takeover, handover, router, greeting, instance, makeSession, redeliver });
 * socket.onopen = () => placement.place(conn);
 * ```
 */
export function createPlacement(deps: PlacementDeps): Placement {
  const { config, log, store, bus, sessions, limits, bounds, takeover, handover, router } = deps;
  const me = deps.instance;
  const { connected } = deps.greeting;
  /** Connections of sockets relayed to sessions held elsewhere, by socket id. */
  const relayed = new Map<string, Connection>();
  /** Every socket with its session found (attached here or relayed), by socket id. */
  const placed = new Map<string, Connection>();

  const remotePeers = bus
    ? createRemotePeers({
      log,
      bus,
      sessions,
      instance: me,
      joined(session, peer, fresh) {
        keepNewest(session, peer.id);
        const start = session.seq;
        session.attach(peer);
        if (fresh) session.emit(connected(session, peer), peer);
        presence(session, peer, null);
        // Nothing running and nobody here: the session may follow its socket at once.
        setTimeout(() => handover.moveOn(session));
        return start;
      },
      left: (session, peer) => handover.afterLeave(session, peer),
      received: (session, peer, data, retry) => router.dispatch(session, data, peer, retry),
    })
    : null;

  const relays = bus
    ? createRelays({
      log,
      bus,
      store,
      instance: me,
      sendHardLimitBytes: config.sendHardLimitBytes,
      adopt: (rec, sockets) => adoptRelayed(rec.id, rec.holder, sockets),
      redeliver(socketId, data, retry) {
        const conn = placed.get(socketId);
        if (conn) deps.redeliver(conn, data, retry);
      },
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
        peer.close(
          CLOSE.restart,
          "Server restart",
          shutdownFrame("This conversation moved to another server; reconnect", "session_moved"),
        );
      }
    }
    handover.end(session, "released", false);
  };

  function ownerOf(conn: Connection): SessionOwner {
    return {
      owner: conn.user?.id ?? null,
      upstreamUser: conn.upstreamUser,
      limitKey: conn.limitKey,
      conversation: conn.conversation,
    };
  }

  /** Binds a socket and its user to a session held here. */
  function bind(session: Session, conn: Connection, peer: Peer): void {
    session.attach(peer);
    session.user = conn.user;
    session.token = conn.token;
    Object.assign(session.state, conn.state);
    conn.session = session;
    conn.peer = peer;
  }

  function tooMany(conn: Connection): void {
    refuse(
      conn,
      new AgentError(
        "too_many_connections",
        `At most ${config.maxSessionsPerUser} sessions per user, all of them connected`,
      ),
      log,
    );
  }

  function newSession(conn: Connection): Session | null {
    if (!bounds.admit(conn.limitKey)) {
      tooMany(conn);
      return null;
    }
    bounds.enforce();
    const session = deps.makeSession(crypto.randomUUID(), { ...ownerOf(conn), conversation: null });
    store.create(session.id, session.owner);
    bind(session, conn, localPeer(conn.socket, conn.socketId, 0));
    sessions.add(session);
    log.info("session_open", { session: session.id });
    session.emit(connected(session));
    return session;
  }

  /** The `resumed` frame (outside the sequence) that opens a resumed socket's replay. */
  function resumedFrame(
    id: string,
    conversation: string | null,
    conn: Connection,
    lastSeq: number,
    replayed: number,
  ): Record<string, unknown> {
    return {
      type: "notification",
      event: "resumed",
      content: `Resumed session ${id}`,
      session_id: id,
      ...(conversation === null ? {} : { conversation, socket_id: conn.socketId }),
      last_seq: lastSeq,
      replayed,
      resume_window_ms: config.resumeWindowMs,
    };
  }

  /**
   * Attaches a socket to a session held here: resuming after `lastSeq`
   * (every frame after it once, then live) or joining fresh. A refusal when
   * the socket cannot have it (another user's, or a plain session whose
   * replay has a hole).
   */
  async function attachHere(
    session: Session,
    conn: Connection,
    lastSeq: number | null,
  ): Promise<Refusal | typeof MOVED | null> {
    // Another user's session is reported exactly like a missing one: nothing leaks.
    if (session.owner !== (conn.user?.id ?? null)) {
      return { code: "not_found", message: "Unknown session" };
    }
    const peer = localPeer(conn.socket, conn.socketId, lastSeq ?? session.seq);
    if (lastSeq !== null) {
      // Attached before the replay is read, its live frames held until the replay is
      // sent: whatever is emitted meanwhile reaches it once, after the replay.
      peer.held = [];
      bind(session, conn, peer);
      const plan = await collectReplay(session, lastSeq);
      if (session.closed) {
        conn.session = null;
        conn.peer = null;
        return MOVED;
      }
      if (conn.socket.readyState !== WebSocket.OPEN) return null;
      if (plan.ok) {
        keepNewest(session, peer.id);
        sendSocketFrame(
          conn.socket,
          resumedFrame(session.id, session.conversation, conn, lastSeq, plan.frames.length),
        );
        session.sendReplay(peer, plan.frames);
        session.release(peer);
        log.info("session_resumed", { session: session.id, replayed: plan.frames.length });
        presence(session, peer, null);
        return null;
      }
      if (session.conversation === null) {
        session.detach(peer.id);
        conn.session = null;
        conn.peer = null;
        return plan;
      }
      // A conversation goes on; the socket is told what it missed cannot be replayed,
      // and starts again from now.
      sendSocketFrame(conn.socket, errorFrame(new AgentError(plan.code, plan.message)));
      peer.held = undefined;
      peer.sentUpTo = session.seq;
    } else {
      keepNewest(session, peer.id);
      bind(session, conn, peer);
    }
    session.emit(connected(session, peer), peer);
    presence(session, peer, null);
    return null;
  }

  /**
   * Takes a session another process held (it let go, or went silent) and
   * attaches the sockets relayed to it here, each continuing after what it
   * was sent.
   */
  async function adoptRelayed(
    id: string,
    holder: string | null,
    sockets: RelaySocket[],
  ): Promise<boolean> {
    const conns = sockets.map((s) => relayed.get(s.id)).filter((c) => c !== undefined);
    if (conns.length === 0) return true;
    if (handover.draining) {
      // A process that is handing over takes nothing on: its sockets go where it is held next.
      for (const conn of conns) {
        relayed.delete(conn.socketId);
        conn.relayed = null;
        redirect(conn, handover.draining);
      }
      return true;
    }
    const last = Math.max(...sockets.map((s) => s.lastSent));
    const session = sessions.get(id) ?? await takeover.adopt(id, holder, ownerOf(conns[0]), last);
    if (!session) return false;
    for (const sock of sockets) {
      const conn = relayed.get(sock.id);
      if (!conn) continue;
      relayed.delete(sock.id);
      conn.relayed = null;
      if (conn.socket.readyState !== WebSocket.OPEN) continue;
      const peer = localPeer(conn.socket, conn.socketId, sock.lastSent);
      peer.held = [];
      bind(session, conn, peer);
      const plan = await collectReplay(session, sock.lastSent);
      if (session.closed) continue;
      if (!plan.ok) {
        closeQuietly(conn.socket, CLOSE.restart, "Server restart");
        continue;
      }
      session.sendReplay(peer, plan.frames);
      session.release(peer);
    }
    return true;
  }

  /**
   * Finds the session a socket asks for and attaches the socket to it, where
   * it is held: here, elsewhere (relayed), or nowhere yet (adopted from the
   * store, or — for a conversation — created). Null once attached or
   * relayed, else why not.
   */
  async function enter(conn: Connection, id: string, lastSeq: number | null) {
    const owner = conn.user?.id ?? null;
    const missing: Refusal = {
      code: "not_found",
      message: "Unknown session, or its resume window has ended; starting a new session",
    };
    // A few rounds: another process may create, take or let go of it meanwhile.
    for (let round = 0; round < 4; round++) {
      const here = sessions.get(id);
      if (here && !here.closed) {
        // A client that resumes may have been served by a process that took the session
        // while this one was cut off from the database: ask the store who holds it.
        if (lastSeq !== null && store.durable && !(await stillHeld(here))) continue;
        const attached = await attachHere(here, conn, lastSeq);
        if (attached === MOVED) continue;
        return attached;
      }
      // A process that is handing over sends the socket on to one that stays.
      if (handover.draining) return MOVED;
      const rec = await store.load(id);
      if (conn.socket.readyState !== WebSocket.OPEN) return null;
      if (rec && rec.owner !== owner) return missing;
      if (rec) {
        if (rec.instance && rec.instance !== me && rec.instanceAlive && relays) {
          relayed.set(conn.socketId, conn);
          conn.relayed = id;
          const joined = await relays.join(rec, {
            id: conn.socketId,
            ws: conn.socket,
            lastSeq,
            resumed: (n) => resumedFrame(id, rec.conversation, conn, lastSeq ?? 0, n),
          });
          if (joined) return null;
          relayed.delete(conn.socketId);
          conn.relayed = null;
        }
        if (sessions.get(id)) continue;
        // May lose a race for it (or the user holds too many): then look again.
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
        sessions.add(deps.makeSession(id, ownerOf(conn)));
        log.info("conversation_open", { session: id, conversation: conn.conversation });
      } else limits.releaseSession(conn.limitKey);
    }
    log.warn("enter_gave_up", { session: id });
    return missing;
  }

  /**
   * Whether this process still holds a session it has (it may have been cut
   * off from the database while another took it over). When the database
   * cannot say, it does.
   */
  async function stillHeld(session: Session): Promise<boolean> {
    const rec = await store.load(session.id).catch(() => undefined);
    if (!rec || rec.instance === me || session.closed) return !session.closed;
    log.warn("session_held_elsewhere", { session: session.id, holder: rec.instance });
    // Its unwritten frames here are stale: dropped with it, so no replay from here serves them.
    store.disown(session.id);
    return false;
  }

  /**
   * A conversation's socket joins it; a plain one starts a session or resumes
   * one — and if that cannot be, gets a fresh one that says why.
   */
  async function place(conn: Connection): Promise<void> {
    if (conn.conversation !== null) {
      const id = await conversationSessionId(conn.user?.id ?? null, conn.conversation);
      const failed = await enter(conn, id, conn.resume?.lastSeq ?? null);
      if (failed === MOVED) redirect(conn, handover.draining ?? "session_moved");
      else if (failed && conn.socket.readyState === WebSocket.OPEN) {
        const err = new AgentError("internal_error", "This conversation cannot be joined now", {
          retryable: true,
        });
        refuse(conn, err, log);
      }
    } else if (!conn.resume) {
      const session = newSession(conn);
      if (session && conn.badResume) {
        router.reject(session, new AgentError("invalid_message", conn.badResume));
      }
    } else {
      const failed = await enter(conn, conn.resume.sessionId, conn.resume.lastSeq).catch((err) => {
        log.error("resume_failed", { session: conn.resume!.sessionId, err: String(err) });
        // The database did not answer: the session may well be there. The client keeps its
        // session id and tries again, instead of starting over.
        if (err instanceof StoreError && err.retryable) return "unavailable" as const;
        return {
          code: "not_found" as const,
          message: "Unknown session, or its resume window has ended; starting a new session",
        };
      });
      if (failed === "unavailable") {
        const why = "The session store did not answer; reconnect to resume";
        return refuse(conn, new AgentError("internal_error", why, { retryable: true }), log);
      }
      if (failed === MOVED) redirect(conn, handover.draining ?? "session_moved");
      else if (failed && conn.socket.readyState === WebSocket.OPEN) {
        log.info("resume_refused", { session: conn.resume.sessionId, code: failed.code });
        const fresh = newSession(conn);
        if (fresh) router.reject(fresh, new AgentError(failed.code, failed.message));
      }
    }
    if ((conn.session || conn.relayed) && conn.socket.readyState === WebSocket.OPEN) {
      placed.set(conn.socketId, conn);
    }
  }

  return {
    place,

    async heldHere(conn) {
      const id = conn.conversation !== null
        ? await conversationSessionId(conn.user?.id ?? null, conn.conversation)
        : conn.resume?.sessionId;
      return id !== undefined && sessions.get(id) !== undefined;
    },

    forward(conn, data, retry = false) {
      if (typeof data !== "string") {
        sendSocketFrame(conn.socket, {
          type: "error",
          code: "unsupported_frame",
          message: "Binary frames are not supported; send JSON text",
          retryable: false,
        });
        return;
      }
      // Past the hard cap the socket closes here; the holder checks the rest as for its own.
      if (frameBytes(data, config.hardMaxMessageBytes) > config.hardMaxMessageBytes) {
        closeQuietly(conn.socket, CLOSE.tooLarge, "Message too large");
        return;
      }
      relays?.forward(conn.relayed!, conn.socketId, data, retry);
    },

    letGo: (sessionId) => remotePeers?.letGo(sessionId) ?? {},

    leave(conn) {
      placed.delete(conn.socketId);
      if (!conn.relayed) return;
      relays?.leave(conn.relayed, conn.socketId);
      relayed.delete(conn.socketId);
      conn.relayed = null;
    },

    onBus(msg) {
      remotePeers?.onBus(msg);
      relays?.onBus(msg);
    },

    wants(sessionId) {
      return sessions.get(sessionId) !== undefined || (relays?.wants(sessionId) ?? false);
    },

    prune() {
      remotePeers?.prune();
    },

    closeRelays(reason) {
      relays?.closeAll(
        shutdownFrame("The server is restarting; reconnect", reason),
        CLOSE.restart,
        "Server restart",
      );
      relays?.stop();
    },
  };
}
