/**
 * The session registry: every live session of this isolate in one map, and
 * one sweeper timer for all of them (a timer per session costs memory and
 * wake-ups at ten thousand sessions).
 *
 * @module
 */
import type { Session } from "./session.ts";

/** Why the sweeper hands a session back. */
export type SweepReason = "idle" | "max_age" | "resume_window";

/** What the sweeper decides with. */
export interface SweepPolicy {
  /** A session with no client activity for this long is ended. */
  idleMs: number;
  /** A session without a socket for this long is ended. */
  resumeWindowMs: number;
  /** A socket attached this long is closed so its client reconnects; 0 = never. */
  maxConnectionAgeMs: number;
  intervalMs: number;
}

/**
 * @example
 * ```ts
 * import { SessionRegistry } from "./registry.ts";
 * const sessions = new SessionRegistry();
 * const policy = { idleMs: 60_000, resumeWindowMs: 120_000, maxConnectionAgeMs: 0, intervalMs: 1000 };
 * sessions.sweep(policy, (s, why) => console.log(s.id, why)); // 0: nothing to expire
 * ```
 */
export class SessionRegistry {
  readonly #map = new Map<string, Session>();
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Number of sessions. */
  get size(): number {
    return this.#map.size;
  }

  /** Number of sessions with a generation running. */
  get inFlight(): number {
    let n = 0;
    for (const s of this.#map.values()) if (s.turns.inFlight) n++;
    return n;
  }

  add(session: Session): void {
    this.#map.set(session.id, session);
  }

  get(id: string): Session | undefined {
    return this.#map.get(id);
  }

  delete(id: string): void {
    this.#map.delete(id);
  }

  values(): IterableIterator<Session> {
    return this.#map.values();
  }

  /**
   * One pass over every session; returns how many were handed to `onExpire`.
   * Exposed for the benchmark, which times it over ten thousand sessions.
   */
  sweep(policy: SweepPolicy, onExpire: (s: Session, why: SweepReason) => void): number {
    const now = Date.now();
    let expired = 0;
    for (const s of this.#map.values()) {
      if (s.detachedAt !== null) {
        if (now - s.detachedAt > policy.resumeWindowMs) {
          expired++;
          onExpire(s, "resume_window");
        }
        // A running generation is activity: the user is waiting for it, not idle.
      } else if (!s.turns.inFlight && now - s.lastActivity > policy.idleMs) {
        expired++;
        onExpire(s, "idle");
      } else if (
        policy.maxConnectionAgeMs > 0 && now - s.oldestAttachedAt > policy.maxConnectionAgeMs
      ) {
        expired++;
        onExpire(s, "max_age");
      }
    }
    return expired;
  }

  /**
   * Starts the one sweeper timer; calling it again restarts it. `afterPass`
   * runs after each pass (store upkeep), never twice at once.
   */
  startSweeper(
    policy: SweepPolicy,
    onExpire: (s: Session, why: SweepReason) => void,
    afterPass?: () => Promise<void>,
  ): void {
    this.stopSweeper();
    let busy = false;
    const timer = setInterval(() => {
      this.sweep(policy, onExpire);
      if (!afterPass || busy) return;
      busy = true;
      afterPass().finally(() => busy = false);
    }, policy.intervalMs);
    // Under plain Deno the sweeper alone must not keep the process alive.
    if (typeof Deno.unrefTimer === "function") Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  stopSweeper(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
