/**
 * The one error type of the SDK: server `error` frames and client-side failures alike.
 *
 * @example
 * ```ts
 * import { AgentError } from "./errors.ts";
 * const err = new AgentError("closed", "The client was closed");
 * console.log(err.code, err.retryable); // "closed" false
 * ```
 * @module
 */
import type { ErrorFrame } from "./protocol.ts";

/**
 * Every failure the SDK reports. Server `error` frames keep their `code`; the client adds
 * `session_lost`, `closed`, `unauthorized`, `policy_violation`, `too_many_connections`,
 * `session_taken_over`, `session_timeout`, `token_expired`, `reconnect_failed`,
 * `delivery_failed`, `offline_queue_full`, `message_too_large`, `duplicate_id`, `token_error`,
 * `invalid_url`, `invalid_conversation` and `unexpected_answer`.
 *
 * @example
 * ```ts
 * import { AgentError } from "./errors.ts";
 * const retry = (e: unknown) => e instanceof AgentError && e.retryable;
 * console.log(retry(new AgentError("rate_limited", "Slow down", { retryable: true }))); // true
 * ```
 */
export class AgentError extends Error {
  override name = "AgentError";
  /** Machine-readable code, e.g. `rate_limited` or `session_lost`. */
  readonly code: string;
  /** Whether sending the same thing again can succeed. */
  readonly retryable: boolean;
  readonly retryAfterMs?: number;
  /** Query or command id the error belongs to. */
  readonly id?: string;
  /** The server's frame, when the error came from one (carries `issues` for bad messages). */
  readonly frame?: ErrorFrame;

  constructor(
    code: string,
    message: string,
    opts: { retryable?: boolean; retryAfterMs?: number; id?: string; frame?: ErrorFrame } = {},
  ) {
    super(message);
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.retryAfterMs = opts.retryAfterMs;
    this.id = opts.id;
    this.frame = opts.frame;
  }

  /**
   * Wraps a server `error` frame.
   *
   * @example
   * ```ts
   * import { AgentError } from "./errors.ts";
   * const err = AgentError.fromFrame({
   *   type: "error", seq: 3, timestamp: "", code: "rate_limited", message: "Slow down",
   *   retryable: true, retry_after_ms: 500,
   * });
   * console.log(err.retryAfterMs); // 500
   * ```
   */
  static fromFrame(f: ErrorFrame): AgentError {
    return new AgentError(String(f.code), String(f.message ?? f.code), {
      retryable: f.retryable === true,
      retryAfterMs: typeof f.retry_after_ms === "number" ? f.retry_after_ms : undefined,
      id: typeof f.id === "string" ? f.id : undefined,
      frame: f,
    });
  }

  /**
   * A copy attributed to one query or call (client-side errors are shared by all pending ones).
   *
   * @example
   * ```ts
   * import { AgentError } from "./errors.ts";
   * console.log(new AgentError("closed", "Closed").withId("q1").id); // "q1"
   * ```
   */
  withId(id: string | undefined): AgentError {
    return new AgentError(this.code, this.message, { retryable: this.retryable, id });
  }
}
