/**
 * Adopting a session another process held: after it crashed, stopped, let go
 * of an idle session, or (with the in-memory store) a conversation kept after
 * its sockets left. The claim is a compare-and-set on the holder, so two
 * processes adopting at once cannot both win.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { SessionStore } from "../store/store.ts";
import { AgentError, errorFrame } from "../protocol/errors.ts";
import type { Session, SessionOwner } from "./session.ts";
import type { SessionRegistry } from "./registry.ts";
import { isCheckpoint } from "../turn/checkpoint.ts";

/** What takeover needs. */
export interface TakeoverDeps {
  config: Config;
  log: Logger;
  store: SessionStore;
  sessions: SessionRegistry;
  /** Builds a session object (the runtime wires its turns). */
  makeSession(id: string, who: SessionOwner, startSeq: number): Session;
  /** Counts one more session for a user; false when they hold too many. */
  admit(limitKey: string): boolean;
}

/** See {@linkcode createTakeover}. */
export interface Takeover {
  /**
   * Claims a session from `holder` (null: nobody holds it) and builds it
   * here; undefined when another process got it first, it is gone, or the
   * user holds too many sessions. `clientSeq` is the highest seq a client of
   * it has seen.
   */
  adopt(
    id: string,
    holder: string | null,
    who: SessionOwner,
    clientSeq: number,
  ): Promise<Session | undefined>;
}

/**
 * @example
 * ```ts ignore
 * const takeover = createTakeover({ config, log, store, sessions, makeSession, admit });
 * const session = await takeover.adopt(id, record.instance, who, lastSeq);
 * ```
 */
export function createTakeover(deps: TakeoverDeps): Takeover {
  const { config, log, store, sessions } = deps;

  return {
    /**
     * Continues the session's seq and ends the queries that were open in the
     * process before as `interrupted` — except a turn that was waiting for
     * people, which carries on here — so none is left without a terminal.
     */
    async adopt(id, holder, who, clientSeq) {
      if (!deps.admit(who.limitKey)) return undefined;
      const rec = await store.claim(id, holder);
      // Another socket may have made it live here meanwhile.
      const local = sessions.get(id);
      if (local) return local;
      if (!rec || rec.owner !== who.owner) {
        if (rec) await store.release(id).catch(() => {});
        return undefined;
      }
      // The client may hold frames the old process sent but never made durable; it has
      // them, so numbering continues after them instead of reusing their seqs.
      const startSeq = Math.max(rec.lastSeq, clientSeq);
      if (startSeq - rec.lastSeq > config.replayMaxFrames) {
        await store.release(id).catch(() => {});
        return undefined;
      }
      const session = deps.makeSession(
        rec.id,
        { ...who, conversation: rec.conversation },
        startSeq,
      );
      session.detach();
      sessions.add(session);
      const waiting = isCheckpoint(rec.suspended) && rec.openQueries[0] === rec.suspended.query.id
        ? rec.suspended
        : undefined;
      log.info("session_adopted", {
        session: session.id,
        from: holder,
        durable_seq: rec.lastSeq,
        client_seq: clientSeq,
        interrupted: rec.openQueries.length - (waiting ? 1 : 0),
        waiting: waiting?.query.id ?? null,
      });
      // The waiting turn first, so the open list the interruptions carry still names it.
      if (waiting) session.turns.resume(waiting);
      for (const qid of rec.openQueries) {
        if (qid === waiting?.query.id) continue;
        // Its client may have sent it again through a relay that could not tell: not twice.
        session.turns.markAnswered(qid);
        session.counters.errors++;
        session.emit(errorFrame(
          new AgentError("interrupted", "The server handling this query stopped; send it again", {
            retryable: true,
          }),
          qid,
        ));
      }
      return session;
    },
  };
}
