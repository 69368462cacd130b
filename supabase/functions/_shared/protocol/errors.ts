/**
 * One typed error for everything that can go wrong in front of a client.
 * Throw an {@linkcode AgentError} anywhere — a hook, a command, a tool, the
 * model backend — and the boundary that called it renders it once as an
 * `error` frame with {@linkcode errorFrame}. Anything else thrown is our bug
 * and becomes `internal_error`, with nothing of it shown to the client.
 *
 * @module
 */
import type { ErrorCode } from "./codes.ts";
import type { ErrorBody } from "./wire.ts";

export type { ErrorBody };

/** Optional parts of an {@linkcode AgentError}. */
export interface AgentErrorOptions {
  /** Whether sending the same thing again can succeed. Default false. */
  retryable?: boolean;
  /** When the client may try again. */
  retryAfterMs?: number;
  /** What exactly was wrong with the client's input. */
  issues?: { path: string; message: string }[];
  /** Extra fields for the error frame (e.g. `tool_call_id`, `resets_at`). */
  fields?: Record<string, unknown>;
  /** The HTTP status behind it, when there was one (logged, never sent). */
  status?: number;
  cause?: unknown;
}

/**
 * An error with a code a client can switch on and a message fit for a human:
 * never a raw upstream body, a stack trace or a secret.
 *
 * @example
 * ```ts
 * import { AgentError } from "./errors.ts";
 * export function onlyMembers(member: boolean) {
 *   if (!member) throw new AgentError("refused", "This agent is for members only");
 * }
 * ```
 */
export class AgentError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly retryAfterMs?: number;
  readonly issues?: { path: string; message: string }[];
  readonly fields?: Record<string, unknown>;
  readonly status?: number;

  constructor(code: ErrorCode, message: string, opts: AgentErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "AgentError";
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.retryAfterMs = opts.retryAfterMs;
    this.issues = opts.issues;
    this.fields = opts.fields;
    this.status = opts.status;
  }
}

/**
 * Renders anything thrown as one `error` frame. `id` names the query or
 * command it answers (for a query, that makes it the query's terminal frame).
 *
 * @example
 * ```ts
 * import { AgentError, errorFrame } from "./errors.ts";
 * errorFrame(new AgentError("queue_full", "Too many waiting", { retryable: true }), "q1");
 * // { type: "error", code: "queue_full", message: "Too many waiting", retryable: true, id: "q1" }
 * ```
 */
export function errorFrame(err: unknown, id?: string): ErrorBody {
  const e = err instanceof AgentError
    ? err
    : new AgentError("internal_error", "Something went wrong on the server", { retryable: true });
  const frame: ErrorBody = {
    ...e.fields,
    type: "error",
    code: e.code,
    message: e.message,
    retryable: e.retryable,
  };
  if (id !== undefined) frame.id = id;
  if (e.retryAfterMs !== undefined) frame.retry_after_ms = e.retryAfterMs;
  if (e.issues !== undefined) frame.issues = e.issues;
  return frame;
}
