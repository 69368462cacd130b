/**
 * Takeover between processes that share a durable store: adopting a session
 * another process held (asking it to let go first if it is alive), and
 * answering the bus when another process wants one of ours.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { SessionStore } from "../store/store.ts";
import type { Bus, BusMessage } from "../store/bus.ts";
import { AgentError, errorFrame } from "../protocol/errors.ts";
import type { ResumeRequest } from "./resume.ts";
import type { Session, SessionOwner } from "./session.ts";
import type { SessionRegistry } from "./registry.ts";
import { notificationFrame, sayTakenOver } from "./socket.ts";
import { sleep } from "../platform/backoff.ts";
import { isCheckpoint } from "../turn/checkpoint.ts";

/** How long a process waits for another to let go of a session it still holds. */
const RELEASE_WAIT_MS = 2000;

/** What takeover needs. */
export interface TakeoverDeps {
  config: Config;
  log: Logger;
  store: SessionStore;
  sessions: SessionRegistry;
  bus?: Bus;
  /** This process's id on the bus. */
  instance: string;
  /** Builds a session object (the runtime wires its turns). */
  makeSession(id: string, who: SessionOwner, startSeq: number): Session;
  /** Lets go of a session here, keeping it in the store. */
  release(session: Session): Promise<void>;
  /** Counts one more session for a user; false when they hold too many. */
  admit(limitKey: string): boolean;
}

/** See {@linkcode createTakeover}. */
export interface Takeover {
  /** Takes over a session this process does not hold; undefined when it cannot. */
  adopt(req: ResumeRequest, who: SessionOwner): Promise<Session | undefined>;
  onBus(msg: BusMessage): Promise<void>;
}

/**
 * @example
 * ```ts
 * import { createTakeover, type TakeoverDeps } from "./takeover.ts";
 * export function wire(deps: TakeoverDeps & { bus: NonNullable<TakeoverDeps["bus"]> }) {
 *   const takeover = createTakeover(deps);
 *   return deps.bus.subscribe((msg) => void takeover.onBus(msg));
 * }
 * ```
 */
export function createTakeover(deps: TakeoverDeps): Takeover {
  const { config, log, store, sessions, bus, instance } = deps;
  /** Resolvers waiting for another process to let go of a session. */
  const waiters = new Map<string, () => void>();

  return {
    /**
     * Asks a live holder to let go (it flushes first), claims the session,
     * continues its seq, and ends the queries that were open there as
     * `interrupted`, so none is left without a terminal frame.
     */
    async adopt(req, who) {
      let rec = await store.load(req.sessionId);
      if (!rec || rec.owner !== who.owner) return undefined;
      if (rec.instance && rec.instance !== instance && rec.instanceAlive && bus) {
        const released = new Promise<void>((resolve) => waiters.set(req.sessionId, resolve));
        await bus.publish({ kind: "release", session: req.sessionId, from: instance });
        await Promise.race([released, sleep(RELEASE_WAIT_MS)]);
        waiters.delete(req.sessionId);
      }
      // Another socket may have resumed it here meanwhile.
      const local = sessions.get(req.sessionId);
      if (local) return local;
      rec = await store.claim(req.sessionId);
      if (!rec) return undefined;
      // The client may hold frames the old process sent but never made durable; it has
      // them, so numbering continues after them instead of reusing their seqs.
      if (req.lastSeq - rec.lastSeq > config.replayMaxFrames) return undefined;
      if (!deps.admit(who.limitKey)) return undefined;
      const session = deps.makeSession(rec.id, who, Math.max(rec.lastSeq, req.lastSeq));
      session.detach();
      sessions.add(session);
      log.info("session_adopted", {
        session: session.id,
        durable_seq: rec.lastSeq,
        client_seq: req.lastSeq,
        interrupted: rec.openQueries.length,
        waiting: isCheckpoint(rec.suspended) ? rec.suspended.query.id : null,
      });
      // A turn that was waiting for people carries on here; the others were cut off.
      const waiting = isCheckpoint(rec.suspended) && rec.openQueries[0] === rec.suspended.query.id
        ? rec.suspended
        : undefined;
      for (const id of rec.openQueries) {
        if (id === waiting?.query.id) continue;
        session.counters.errors++;
        session.emit(errorFrame(
          new AgentError("interrupted", "The server handling this query stopped; send it again", {
            retryable: true,
          }),
          id,
        ));
      }
      if (waiting) session.turns.resume(waiting);
      else if (rec.openQueries.length > 0) store.setOpenQueries(session.id, []);
      return session;
    },

    async onBus(msg) {
      if (msg.from === instance) return;
      const session = sessions.get(msg.session);
      if (msg.kind === "released") {
        waiters.get(msg.session)?.();
      } else if (msg.kind === "release" && session) {
        log.info("session_handover", { session: session.id, to: msg.from });
        if (session.socket) sayTakenOver(session.socket, session.id);
        await deps.release(session);
        await bus?.publish({ kind: "released", session: msg.session, from: instance });
      } else if (msg.kind === "notify" && session) {
        session.emit(notificationFrame(msg.event, msg.content, msg.data));
      }
    },
  };
}
