/**
 * Retry timing: exponential backoff with full jitter, so that many sessions
 * retrying one rate-limited upstream spread out instead of stampeding, and
 * `Retry-After` parsing for when the upstream says how long to wait.
 *
 * @module
 */

/**
 * The delay before retry number `attempt` (0-based): a uniform random value
 * in `[0, min(maxMs, baseMs * 2^attempt))`.
 *
 * @example
 * ```ts
 * const delay = fullJitterDelay(2, 500, 8000); // somewhere in [0, 2000)
 * ```
 */
export function fullJitterDelay(
  attempt: number,
  baseMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.floor(random() * ceiling);
}

/**
 * Parses a `Retry-After` header (delta-seconds or an HTTP date) into
 * milliseconds; undefined when absent or unreadable.
 *
 * @example
 * ```ts
 * parseRetryAfter("2"); // 2000
 * ```
 */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return seconds >= 0 ? Math.round(seconds * 1000) : undefined;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * Waits `ms`, or rejects with the signal's reason as soon as it aborts, so a
 * cancelled query never sits out a backoff.
 *
 * @example
 * ```ts
 * await sleep(100, AbortSignal.timeout(1000));
 * ```
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Waits for `promise`, but at most `ms`: true when it settled in time. The
 * timer is cleared either way, so a grace period never keeps a process alive.
 *
 * @example
 * ```ts
 * import { settlesWithin } from "./backoff.ts";
 * await settlesWithin(new Promise(() => {}), 10); // false: gave up after 10 ms
 * ```
 */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise.then(() => true, () => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
