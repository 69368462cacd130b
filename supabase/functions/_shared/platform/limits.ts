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
 * Each process has its own buckets. With a shared store (store/quota.ts) the
 * queries a user is let through are also counted per UTC minute across every
 * process, and a user past what one bucket allows in a minute is refused
 * here too, however their sockets are spread.
 *
 * @module
 */
import { TokenBucket } from "./rate_limit.ts";
import { SharedCounts } from "./shared_counts.ts";

const MINUTE_MS = 60_000;

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
  /** The wall clock of the shared minute windows, in milliseconds since the epoch. */
  wallClock?: () => number;
}

/**
 * @example
 * ```ts
 * import { UserLimits } from "./limits.ts";
 * const limits = new UserLimits({ perUser: 5, perMinute: 60, burst: 10, sessionsPerUser: 20 });
 * limits.acquire("user-1"); // true: a socket slot (false: close 4029)
 * limits.acquireSession("user-1"); // true: a session slot
 * limits.take("user-1"); // 0: the query may run now
 * limits.releaseSession("user-1");
 * limits.release("user-1");
 * ```
 */
export class UserLimits {
  readonly #sockets = new Map<string, number>();
  readonly #sessions = new Map<string, number>();
  readonly #buckets = new Map<string, TokenBucket>();
  readonly #now: () => number;
  readonly #wall: () => number;
  readonly #sweepEveryMs: number;
  #lastSweep: number;
  /** Queries let through per user per UTC minute, here and elsewhere; null: not shared. */
  #window: SharedCounts | null = null;

  constructor(readonly opts: UserLimitOptions) {
    this.#now = opts.now ?? (() => performance.now());
    this.#wall = opts.wallClock ?? (() => Date.now());
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
    const wall = this.#wall();
    const minute = Math.floor(wall / MINUTE_MS);
    if (this.#window) {
      const wait = slidingWait(
        this.#window.total(user, String(minute - 1))[0],
        this.#window.total(user, String(minute))[0],
        this.sharedLimit,
        wall - minute * MINUTE_MS,
      );
      if (wait > 0) return wait;
    }
    let bucket = this.#buckets.get(user);
    if (!bucket) {
      bucket = new TokenBucket(this.opts.perMinute, this.opts.burst, this.#now);
      this.#buckets.set(user, bucket);
    }
    const wait = bucket.take();
    if (wait === 0) this.#window?.add(user, String(minute), [1]);
    return wait;
  }

  /**
   * From now on counts the queries let through per user per UTC minute, for
   * a sync to share with other processes; returns those counts (periods are
   * minutes since the epoch).
   */
  shareRate(): SharedCounts {
    return this.#window ??= new SharedCounts(1, this.#now);
  }

  /**
   * Queries in any 60 s, across processes, past which a user is refused:
   * what one bucket lets through in a minute, so a user on one process never
   * notices the shared count.
   */
  get sharedLimit(): number {
    return this.opts.perMinute + this.opts.burst;
  }

  /**
   * Forgets shared minute counts that no longer matter, and users unused for
   * `idleMs` but those `held` says to keep following; called by the sync.
   */
  pruneShared(idleMs: number, held?: (user: string) => boolean): number {
    const current = Math.floor(this.#wall() / MINUTE_MS);
    return this.#window?.prune((m) => Number(m) >= current - 1, idleMs, { held }) ?? 0;
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

/**
 * The wait before one more query fits a sliding minute, estimated from two
 * fixed ones (as Cloudflare does): the previous minute's count weighs as much
 * as the part of it still inside the last 60 s. It smooths the edge between
 * minutes, where fixed windows would let twice the limit through.
 *
 * @example
 * ```ts
 * import { slidingWait } from "./limits.ts";
 * slidingWait(0, 4, 5, 30_000); // 0: one more fits
 * slidingWait(0, 5, 5, 30_000); // 30_001: not before the next minute
 * ```
 */
export function slidingWait(prev: number, cur: number, limit: number, intoMs: number): number {
  const f = intoMs / MINUTE_MS;
  if (prev * (1 - f) + cur < limit) return 0;
  // Within this minute, once the previous one weighs little enough…
  if (cur < limit) return Math.ceil((1 - (limit - cur) / prev) * MINUTE_MS - intoMs) + 1;
  // …else into the next one, where this minute's count is the previous one.
  return Math.ceil(MINUTE_MS - intoMs + (1 - limit / cur) * MINUTE_MS) + 1;
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
