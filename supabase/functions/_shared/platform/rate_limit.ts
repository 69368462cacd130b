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
 * bucket.full(); // false right after a take; true again once refilled
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

  /** Milliseconds an empty bucket takes to be full again. */
  get refillMs(): number {
    return (this.burst / this.perMinute) * 60_000;
  }

  #refill(t: number): number {
    return Math.min(this.burst, this.#tokens + (t - this.#last) * (this.perMinute / 60_000));
  }

  /** Takes one token; returns 0 if it was there, else the milliseconds until one will be. */
  take(): number {
    const t = this.now();
    this.#tokens = this.#refill(t);
    this.#last = t;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - this.#tokens) / (this.perMinute / 60_000));
  }

  /**
   * Whether the bucket is full: then it is no different from a new one, and
   * dropping it loses nothing.
   */
  full(): boolean {
    return this.#refill(this.now()) >= this.burst;
  }
}
