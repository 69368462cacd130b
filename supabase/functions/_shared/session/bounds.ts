/**
 * What a process may hold: sessions per user (the user id, or the client
 * address without auth), sessions and replay-log memory in all. Past a bound
 * the session that has waited longest for a resume is ended first — a
 * connected one never is — and its resume then honestly says `not_found`.
 *
 * @module
 */
import type { Logger } from "../platform/log.ts";
import type { UserLimits } from "../platform/limits.ts";
import type { SessionStore } from "../store/store.ts";
import type { SessionRegistry } from "./registry.ts";
import type { Session } from "./session.ts";

/** What {@linkcode createSessionBounds} needs. */
export interface SessionBoundsDeps {
  sessions: SessionRegistry;
  limits: UserLimits;
  store: SessionStore;
  log: Logger;
  maxSessions: number;
  replayMemoryBytes: number;
  /** Ends a session here (the runtime's own way, which also releases its user's count). */
  end(session: Session): void;
}

/** See {@linkcode createSessionBounds}. */
export interface SessionBounds {
  /**
   * Makes room for one more session of `key`; false when every session of
   * theirs has a live socket (the caller refuses the new one).
   */
  admit(key: string): boolean;
  /** Ends the oldest detached sessions while the process is past its bounds. */
  enforce(): void;
}

/**
 * @example
 * ```ts ignore
 * const bounds = createSessionBounds({ sessions, limits, store, log, maxSessions: 10_000,
 *   replayMemoryBytes: 64 << 20, end: (s) => endSession(s, "closed") });
 * if (!bounds.admit(conn.limitKey)) refuse(conn);
 * ```
 */
export function createSessionBounds(deps: SessionBoundsDeps): SessionBounds {
  const { sessions, limits, store, log } = deps;

  /** Sessions waiting for a resume, oldest first; `key` narrows to one user's. */
  function detached(key?: string): Session[] {
    const out: Session[] = [];
    for (const s of sessions.values()) {
      if (s.detachedAt !== null && (key === undefined || s.limitKey === key)) out.push(s);
    }
    return out.sort((a, b) => a.detachedAt! - b.detachedAt!);
  }

  const within = () =>
    sessions.size <= deps.maxSessions && store.memoryBytes <= deps.replayMemoryBytes;

  return {
    admit(key) {
      if (limits.acquireSession(key)) return true;
      const oldest = detached(key)[0];
      if (!oldest) return false;
      log.info("session_evicted", { session: oldest.id, why: "sessions_per_user" });
      deps.end(oldest);
      return limits.acquireSession(key);
    },
    enforce() {
      if (within()) return;
      for (const s of detached()) {
        if (within()) break;
        log.info("session_evicted", { session: s.id, why: "memory_budget" });
        deps.end(s);
      }
    },
  };
}
