/**
 * Reconnect policy of the SDK as pure functions: backoff delays, which close codes end the
 * client, duplicate filtering by `seq` and the resume URL. Kept free of I/O so it can be unit
 * tested without a server.
 *
 * @example
 * ```ts
 * import { backoffDelay, resolveReconnect } from "./backoff.ts";
 * const policy = resolveReconnect({ maxDelayMs: 5000 });
 * const waitMs = backoffDelay(3, policy); // somewhere in [0, 2000)
 * ```
 * @module
 */
import { CLOSE } from "./protocol.ts";

/**
 * Reconnect tuning. Every field is optional; see {@link DEFAULT_RECONNECT} for the defaults.
 *
 * @example
 * ```ts
 * const opts: ReconnectOptions = { initialDelayMs: 500, maxAttempts: 20 };
 * ```
 */
export interface ReconnectOptions {
  /** Upper bound of the first delay, in ms. */
  initialDelayMs?: number;
  /** Cap of the upper bound, in ms. */
  maxDelayMs?: number;
  /** Growth of the upper bound per attempt. */
  factor?: number;
  /** Reconnect attempts in a row before the client gives up. */
  maxAttempts?: number;
}

/**
 * The reconnect policy with every field filled in.
 *
 * @example
 * ```ts
 * const policy: ReconnectPolicy = resolveReconnect();
 * ```
 */
export type ReconnectPolicy = Required<ReconnectOptions>;

/**
 * Defaults: 250 ms, doubling, capped at 10 s, retried forever.
 *
 * @example
 * ```ts
 * console.log(DEFAULT_RECONNECT.maxDelayMs); // 10000
 * ```
 */
export const DEFAULT_RECONNECT: Readonly<ReconnectPolicy> = Object.freeze({
  initialDelayMs: 250,
  maxDelayMs: 10_000,
  factor: 2,
  maxAttempts: Infinity,
});

/**
 * Fills in defaults; `false` means "never reconnect".
 *
 * @example
 * ```ts
 * resolveReconnect(false).maxAttempts; // 0
 * ```
 */
export function resolveReconnect(opts?: ReconnectOptions | false): ReconnectPolicy {
  if (opts === false) return { ...DEFAULT_RECONNECT, maxAttempts: 0 };
  const p = { ...DEFAULT_RECONNECT };
  for (const key of Object.keys(p) as (keyof ReconnectPolicy)[]) {
    const v = opts?.[key];
    if (typeof v === "number" && !Number.isNaN(v) && v >= 0) p[key] = v;
  }
  return p;
}

/**
 * Delay before reconnect attempt `attempt` (0-based), with full jitter:
 * `random(0, min(maxDelayMs, initialDelayMs * factor ** attempt))`. Full jitter spreads a crowd
 * of clients dropped by one server restart over the whole window instead of letting them return
 * in lockstep.
 *
 * @example
 * ```ts
 * backoffDelay(0, resolveReconnect(), () => 0.5); // 125
 * ```
 */
export function backoffDelay(
  attempt: number,
  policy: ReconnectPolicy,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(
    policy.maxDelayMs,
    policy.initialDelayMs * policy.factor ** Math.max(0, attempt),
  );
  // 0 * Infinity is NaN (initialDelayMs 0 after many attempts); timers also overflow past 2^31-1.
  return Math.floor(random() * Math.min(Number.isNaN(ceiling) ? 0 : ceiling, 2 ** 31 - 1));
}

/**
 * What a close code means for the client: reconnect (perhaps with a fresh token), or stop with
 * an error code.
 *
 * @example
 * ```ts
 * import { closeDisposition } from "./backoff.ts";
 * const d: CloseDisposition = closeDisposition(4001, "");
 * if (!d.reconnect) console.log(d.error); // "unauthorized"
 * ```
 */
export interface CloseDisposition {
  reconnect: boolean;
  /** `AgentError` code to stop with, when `reconnect` is false. */
  error?: string;
  /**
   * The token was refused as expired: reconnect only with a token the provider function fetches
   * anew. A fixed token string cannot be renewed, so the client then stops with `token_expired`.
   */
  refreshToken?: boolean;
}

/**
 * Classifies a close. Terminal: `CLOSE.unauthorized` 4001 (bad token: retrying cannot help until
 * the app gets a new one), `CLOSE.policy` 1008 (e.g. origin refused),
 * `CLOSE.tooManyConnections` 4029 (retrying would only add load), `CLOSE.takenOver` 4002
 * (another connection resumed this session: reconnecting would steal it back, and the two would
 * evict each other forever) and `CLOSE.normal` 1000 "Session timeout" (the server ended the
 * session on purpose). `CLOSE.tokenExpired` 4003 reconnects with a token fetched anew.
 * Everything else, 1012 restart and abnormal 1006 included, is worth a reconnect and resume.
 *
 * @example
 * ```ts
 * import { closeDisposition } from "./backoff.ts";
 * closeDisposition(1012, "Server restart"); // { reconnect: true }
 * closeDisposition(4003, "Token expired"); // { reconnect: true, refreshToken: true }
 * ```
 */
export function closeDisposition(code: number, reason: string): CloseDisposition {
  switch (code) {
    case CLOSE.unauthorized:
      return { reconnect: false, error: "unauthorized" };
    case CLOSE.policy:
      return { reconnect: false, error: "policy_violation" };
    case CLOSE.tooManyConnections:
      return { reconnect: false, error: "too_many_connections" };
    case CLOSE.takenOver:
      return { reconnect: false, error: "session_taken_over" };
    case CLOSE.tokenExpired:
      return { reconnect: true, refreshToken: true };
    case CLOSE.normal:
      if (/session timeout/i.test(reason)) return { reconnect: false, error: "session_timeout" };
  }
  return { reconnect: true };
}

/**
 * True when a frame was already delivered: its `seq` is not above the highest seen. Frames
 * without a positive `seq` are outside the session's numbering (the server marks frames about
 * one socket, such as `resumed`, with `seq: 0`) and are never duplicates.
 *
 * @example
 * ```ts
 * isDuplicate(7, 7); // true
 * isDuplicate(8, 7); // false
 * ```
 */
export function isDuplicate(seq: unknown, lastSeq: number): boolean {
  return typeof seq === "number" && seq > 0 && seq <= lastSeq;
}

/**
 * The URL to reopen a session: `url` with `session_id` and `last_seq` set, other query
 * parameters kept.
 *
 * @example
 * ```ts
 * resumeUrl("wss://x.supabase.co/functions/v1/agent_websocket?jwt=t", "abc", 42);
 * // "wss://x.supabase.co/functions/v1/agent_websocket?jwt=t&session_id=abc&last_seq=42"
 * ```
 */
export function resumeUrl(url: string, sessionId: string, lastSeq: number): string {
  const u = socketUrl(url);
  u.searchParams.set("session_id", sessionId);
  u.searchParams.set("last_seq", String(lastSeq));
  return u.toString();
}

/**
 * `url` as a WebSocket URL: resolved against the page when relative (legal for a browser
 * WebSocket), and `http(s)` (the function URL as the dashboard shows it) turned into `ws(s)`.
 *
 * @example
 * ```ts
 * socketUrl("https://x.supabase.co/functions/v1/agent_websocket").protocol; // "wss:"
 * ```
 */
export function socketUrl(url: string): URL {
  const base = (globalThis as { location?: { href: string } }).location?.href;
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  return u;
}
