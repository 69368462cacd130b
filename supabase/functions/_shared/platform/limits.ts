/**
 * Per-user limits: how many sockets a user holds and the user's query rate.
 * Keyed by the authenticated user id; without auth each session is its own
 * "user", so one browser tab cannot starve another.
 *
 * @module
 */
import { TokenBucket } from "./rate_limit.ts";

/**
 * @example
 * ```ts
 * const limits = new UserLimits({ perUser: 5, perMinute: 60, burst: 10 });
 * if (!limits.acquire("user-1")) closeWith4029();
 * limits.release("user-1");
 * ```
 */
export class UserLimits {
  readonly #sockets = new Map<string, number>();
  readonly #buckets = new Map<string, TokenBucket>();

  constructor(readonly opts: { perUser: number; perMinute: number; burst: number }) {}

  /** Counts one more socket for `user`; false (and nothing counted) when at the limit. */
  acquire(user: string): boolean {
    const n = this.#sockets.get(user) ?? 0;
    if (n >= this.opts.perUser) return false;
    this.#sockets.set(user, n + 1);
    return true;
  }

  /** Forgets one socket of `user`. */
  release(user: string): void {
    const n = (this.#sockets.get(user) ?? 0) - 1;
    if (n > 0) this.#sockets.set(user, n);
    else this.#sockets.delete(user);
  }

  /** Sockets `user` holds now. */
  sockets(user: string): number {
    return this.#sockets.get(user) ?? 0;
  }

  /** Takes a query token for `user`: 0 when allowed, else milliseconds to wait. */
  take(user: string): number {
    let bucket = this.#buckets.get(user);
    if (!bucket) {
      bucket = new TokenBucket(this.opts.perMinute, this.opts.burst);
      this.#buckets.set(user, bucket);
    }
    return bucket.take();
  }

  /** Drops the rate state of a user with no sockets and no sessions left. */
  forget(user: string): void {
    if (!this.#sockets.has(user)) this.#buckets.delete(user);
  }
}
