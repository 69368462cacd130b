/**
 * Per-user limits: the sockets and sessions a user holds, and the user's
 * query rate. Keyed by the authenticated user id; without auth by whatever
 * the caller names the "user" (the client address).
 *
 * A user's rate bucket outlives their sockets and sessions until it is full
 * again, so reconnecting does not buy a fresh burst; buckets that are full
 * again are swept, so memory stays bounded by the users active within one
 * refill period.
 *
 * @module
 */
import { TokenBucket } from "./rate_limit.ts";

/** What {@linkcode UserLimits} bounds. */
export interface UserLimitOptions {
  /** Open sockets per user. */
  perUser: number;
  /** Sustained queries per minute per user. */
  perMinute: number;
  /** Queries a user may send at once. */
  burst: number;
  /** Sessions per user, attached or waiting for a resume. Default: no bound. */
  sessionsPerUser?: number;
  /** The clock, in milliseconds (tests pass their own). */
  now?: () => number;
}

/**
 * @example
 * ```ts
 * const limits = new UserLimits({ perUser: 5, perMinute: 60, burst: 10, sessionsPerUser: 20 });
 * if (!limits.acquire("user-1")) closeWith4029();
 * if (!limits.acquireSession("user-1")) refuseNewSession();
 * const waitMs = limits.take("user-1"); // 0: the query may run
 * limits.releaseSession("user-1");
 * limits.release("user-1");
 * ```
 */
export class UserLimits {
  readonly #sockets = new Map<string, number>();
  readonly #sessions = new Map<string, number>();
  readonly #buckets = new Map<string, TokenBucket>();
  readonly #now: () => number;
  readonly #sweepEveryMs: number;
  #lastSweep: number;

  constructor(readonly opts: UserLimitOptions) {
    this.#now = opts.now ?? (() => performance.now());
    this.#sweepEveryMs = Math.max(1000, (opts.burst / opts.perMinute) * 60_000);
    this.#lastSweep = this.#now();
  }

  /** Counts one more socket for `user`; false (and nothing counted) when at the limit. */
  acquire(user: string): boolean {
    return acquireIn(this.#sockets, user, this.opts.perUser);
  }

  /** Forgets one socket of `user`. */
  release(user: string): void {
    releaseIn(this.#sockets, user);
  }

  /** Sockets `user` holds now. */
  sockets(user: string): number {
    return this.#sockets.get(user) ?? 0;
  }

  /** Counts one more session for `user`; false (and nothing counted) when at the limit. */
  acquireSession(user: string): boolean {
    return acquireIn(this.#sessions, user, this.opts.sessionsPerUser ?? Infinity);
  }

  /** Forgets one session of `user`. */
  releaseSession(user: string): void {
    releaseIn(this.#sessions, user);
  }

  /** Sessions `user` holds now. */
  sessions(user: string): number {
    return this.#sessions.get(user) ?? 0;
  }

  /** Takes a query token for `user`: 0 when allowed, else milliseconds to wait. */
  take(user: string): number {
    if (this.#now() - this.#lastSweep >= this.#sweepEveryMs) this.sweep();
    let bucket = this.#buckets.get(user);
    if (!bucket) {
      bucket = new TokenBucket(this.opts.perMinute, this.opts.burst, this.#now);
      this.#buckets.set(user, bucket);
    }
    return bucket.take();
  }

  /**
   * Called when a user's session ends. The bucket stays until it is full
   * again (a new session must not reset the rate); only a full one goes now.
   */
  forget(user: string): void {
    if (this.#buckets.get(user)?.full()) this.#buckets.delete(user);
  }

  /** Drops every bucket that is full again; returns how many. Runs by itself from `take`. */
  sweep(): number {
    this.#lastSweep = this.#now();
    let dropped = 0;
    for (const [user, bucket] of this.#buckets) {
      if (bucket.full()) {
        this.#buckets.delete(user);
        dropped++;
      }
    }
    return dropped;
  }

  /** Rate buckets held now. */
  get buckets(): number {
    return this.#buckets.size;
  }
}

function acquireIn(counts: Map<string, number>, user: string, max: number): boolean {
  const n = counts.get(user) ?? 0;
  if (n >= max) return false;
  counts.set(user, n + 1);
  return true;
}

function releaseIn(counts: Map<string, number>, user: string): void {
  const n = (counts.get(user) ?? 0) - 1;
  if (n > 0) counts.set(user, n);
  else counts.delete(user);
}
