/**
 * A token bucket: `burst` queries at once, refilled at `perMinute`. Used per
 * session now and per user once auth names users.
 *
 * @module
 */

/**
 * @example
 * ```ts
 * const bucket = new TokenBucket(60, 10);
 * const wait = bucket.take(); // 0 when allowed, else ms until a token is back
 * ```
 */
export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(
    readonly perMinute: number,
    readonly burst: number,
    readonly now: () => number = () => performance.now(),
  ) {
    this.#tokens = burst;
    this.#last = now();
  }

  /** Takes one token; returns 0 if it was there, else the milliseconds until one will be. */
  take(): number {
    const t = this.now();
    const perMs = this.perMinute / 60_000;
    this.#tokens = Math.min(this.burst, this.#tokens + (t - this.#last) * perMs);
    this.#last = t;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - this.#tokens) / perMs);
  }
}
