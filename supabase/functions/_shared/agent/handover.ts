/**
 * How a session leaves this process: closed for good, released to the store
 * (a durable session, or a kept conversation), handed over on a planned stop
 * (draining: only once its answer in flight has ended), or handed to the
 * process where all its sockets are once it is idle; and what the sweeper's
 * verdicts (idle, resume window, connection age) do.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { UserLimits } from "../platform/limits.ts";
import type { SessionStore } from "../store/store.ts";
import type { Bus } from "../store/bus.ts";
import { CLOSE } from "../protocol/codes.ts";
import type { Peer, Session } from "../session/session.ts";
import type { SessionRegistry, SweepReason } from "../session/registry.ts";
import { presence } from "../session/peers.ts";
import { shutdownFrame } from "../session/socket.ts";

/** What the handover needs. */
export interface HandoverDeps {
  config: Config;
  log: Logger;
  store: SessionStore;
  bus?: Bus;
  sessions: SessionRegistry;
  limits: UserLimits;
  /** This process's id on the bus. */
  instance: string;
  /** Per relaying process, the last of its client frames handled here (for `released`). */
  letGo(sessionId: string): Record<string, number>;
}

/** See {@linkcode createHandover}. */
export interface Handover {
  /** Why this process is handing its sessions over; null while it takes work. */
  readonly draining: string | null;
  /** Starts draining (once); hands over what is settled already, and again when called again. */
  drain(reason: string): boolean;
  /**
   * Ends this process's hold on a session. "closed" forgets it everywhere;
   * "released" keeps it in the store for another process (or a later join
   * of a conversation), with its open queries left for whoever takes it to
   * end as `interrupted` — and, unless `announce` is false, tells the
   * processes relaying it, which take it.
   */
  end(session: Session, why: "closed" | "released", announce?: boolean): Promise<void>;
  /** Ends it the way its kind ends: a plain session is closed, a conversation kept. */
  let(session: Session): Promise<void>;
  /** Says goodbye to the sockets here (they reconnect and resume) and lets the session go. */
  handOver(session: Session, reason: string, content: string): void;
  /** After a turn, a join or a leave: the session may go now (draining, or idle elsewhere). */
  moveOn(session: Session): void;
  /** A socket left: presence, and what becomes of a session nobody watches. */
  afterLeave(session: Session, peer: Peer): void;
  /** What the sweeper's verdict does. */
  expire(session: Session, why: SweepReason): void;
  /**
   * Resolves once every session let go of so far is written as such and
   * announced: what a stopping process waits for before it closes the store.
   */
  ended(): Promise<void>;
}

/**
 * @example
 * ```ts ignore
 * const handover = createHandover({ config, log, store, bus, sessions, limits, instance });
 * handover.drain("sigterm"); // sessions go as their answers end
 * ```
 */
export function createHandover(deps: HandoverDeps): Handover {
  const { config, log, store, bus, sessions, limits } = deps;
  let draining: string | null = null;
  /** Ends not yet written and announced. */
  const ending = new Set<Promise<void>>();

  function end(session: Session, why: "closed" | "released", announce = true): Promise<void> {
    if (session.closed) return Promise.resolve();
    session.close(why);
    sessions.delete(session.id);
    limits.releaseSession(session.limitKey);
    limits.forget(session.rateKey);
    // Taken as it closes: no client frame is handled here from now on.
    const took = deps.letGo(session.id);
    const done = (why === "released" ? store.release(session.id) : store.delete(session.id))
      .then(async () => {
        if (why === "released" && announce && bus && store.durable) {
          await bus.publish({ kind: "released", session: session.id, from: deps.instance, took });
        }
      }).catch((err) =>
        log.warn("store_end_failed", { session: session.id, why, err: String(err) })
      ).finally(() => ending.delete(done));
    ending.add(done);
    return done;
  }

  const letGo = (session: Session) =>
    end(session, session.conversation === null ? "closed" : "released");

  function handOver(session: Session, reason: string, content: string): void {
    const goodbye = shutdownFrame(content, reason);
    const local = [...session.peers.values()].filter((p) => p.ws);
    if (session.conversation === null) {
      if (local.length > 0) session.emit(goodbye);
    } else for (const peer of local) session.emit(goodbye, peer);
    for (const peer of local) peer.close(CLOSE.restart, "Server restart");
    // A durable session stays resumable in another process; a conversation is kept.
    end(session, store.durable || session.conversation !== null ? "released" : "closed");
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
    // An answer's last frame may still wait to be written: it goes out first.
    if (session.sentSeq < session.seq) return void session.whenSent().then(() => settle(session));
    handOver(session, draining, "This server is handing over; reconnect");
  }

  /**
   * A session whose sockets are all on one other process, with nothing
   * running: that process takes it (one hop less for every frame).
   */
  function handOffIfIdle(session: Session): void {
    if (!bus || session.closed || session.turns.inFlight) return;
    if (session.turns.waiting > 0 || session.peers.size === 0) return;
    const where = session.remoteInstances();
    if (where.size !== 1 || [...session.peers.values()].some((p) => p.ws)) return;
    log.info("session_handoff", { session: session.id, to: [...where][0] });
    end(session, "released");
  }

  const moveOn = (session: Session) => draining ? settle(session) : handOffIfIdle(session);

  return {
    get draining() {
      return draining;
    },

    drain(reason) {
      const first = draining === null;
      if (first) {
        draining = reason;
        log.warn("draining", { reason, sessions: sessions.size, in_flight: sessions.inFlight });
      }
      // Called again while draining: turns that began to wait for people since may go now.
      for (const session of [...sessions.values()]) settle(session);
      return first;
    },

    end,
    let: letGo,
    ended: () => Promise.all(ending).then(() => {}),
    handOver,
    moveOn,

    afterLeave(session, peer) {
      presence(session, null, peer);
      if (session.peers.size === 0 && config.resumeWindowMs <= 0) {
        log.info("session_close", { session: session.id });
        letGo(session);
        return;
      }
      moveOn(session);
    },

    expire(session, why) {
      if (why === "resume_window") {
        log.info("session_expired", { session: session.id });
        letGo(session);
      } else if (why === "idle") {
        log.info("session_timeout", { session: session.id });
        session.emit({
          type: "notification",
          event: "session_timeout",
          content: "Session closed due to inactivity",
        });
        for (const peer of [...session.peers.values()]) peer.close(CLOSE.normal, "Session timeout");
        letGo(session);
      } else {
        const now = Date.now();
        for (const peer of [...session.peers.values()]) {
          if (!peer.ws || now - (peer.attachedAt ?? now) <= config.maxConnectionAgeMs) continue;
          log.info("connection_max_age", { session: session.id, socket: peer.id });
          session.emit(
            shutdownFrame("Connection reached its maximum age; reconnect", "max_connection_age"),
            peer,
          );
          peer.close(CLOSE.restart, "Maximum connection age");
        }
      }
    },
  };
}
