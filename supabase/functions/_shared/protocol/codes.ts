/**
 * Every code of the protocol in one place — close codes, error codes, the
 * subprotocol and the version — shared by the server and the client SDK so
 * the two can never disagree. No dependencies: the SDK bundles this file.
 *
 * @example
 * ```ts
 * import { CLOSE, ERROR_CODES } from "./codes.ts";
 * const onClose = (event: CloseEvent) => {
 *   if (event.code === CLOSE.unauthorized) console.log("fetch a new token");
 * };
 * console.log(onClose, ERROR_CODES.includes("rate_limited"));
 * ```
 *
 * @module
 */

/** The protocol version announced in the `connected` notification. */
export const PROTOCOL_VERSION = 1;

/**
 * The subprotocol a client may offer; the server selects it when offered.
 *
 * @example
 * ```ts
 * import { SUBPROTOCOL } from "./codes.ts";
 * export const connect = (url: string) => new WebSocket(url, [SUBPROTOCOL]);
 * ```
 */
export const SUBPROTOCOL = "agent-websocket.v1";

/** The prefix of the subprotocol that carries an access token (`jwt-<token>`). */
export const TOKEN_SUBPROTOCOL_PREFIX = "jwt-";

/**
 * WebSocket close codes the server uses, and what a client should do on each.
 *
 * @example
 * ```ts
 * import { CLOSE } from "./codes.ts";
 * const retry = (code: number) => code !== CLOSE.unauthorized && code !== CLOSE.takenOver;
 * retry(CLOSE.restart); // true
 * ```
 */
export const CLOSE = {
  /** Normal close, also "Session timeout" after inactivity. */
  normal: 1000,
  /** No pong in time: the connection is dead. Reconnect and resume. */
  goingAway: 1001,
  /** The origin was refused, or the client broke the protocol. */
  policy: 1008,
  /** A frame above the hard size cap. */
  tooLarge: 1009,
  internal: 1011,
  /** The server is restarting or the connection reached its age: reconnect and resume. */
  restart: 1012,
  /** The client stopped reading; it may reconnect and resume later. */
  tryAgainLater: 1013,
  /** No valid token: reconnect only with a new one. */
  unauthorized: 4001,
  /** Another socket resumed the session; the client must not reconnect on its own. */
  takenOver: 4002,
  /** The access token expired while connected: fetch a fresh token, then resume. */
  tokenExpired: 4003,
  /** Too many connections for this user. */
  tooManyConnections: 4029,
} as const;

/** One of {@linkcode CLOSE}'s values. */
export type CloseCode = (typeof CLOSE)[keyof typeof CLOSE];

/** Every error code a server may send. Clients switch on these, never on messages. */
export const ERROR_CODES = [
  "invalid_json",
  "invalid_message",
  "content_required",
  "unsupported_frame",
  "message_too_large",
  "unknown_command",
  "rate_limited",
  "queue_full",
  "not_found",
  "resume_gap",
  "unauthorized",
  "token_expired",
  "too_many_connections",
  "slow_consumer",
  "interrupted",
  "draining",
  "not_configured",
  "model_not_allowed",
  "refused",
  "budget_exceeded",
  "answer_too_large",
  "upstream_error",
  "upstream_timeout",
  "upstream_rate_limited",
  "upstream_unavailable",
  "insufficient_credits",
  "internal_error",
] as const;

/** One of {@linkcode ERROR_CODES}. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The features a server may announce in `connected.features`. */
export const FEATURES = [
  "tools",
  "client_tools",
  "approval",
  "reasoning",
  "conversations",
  "memory",
] as const;

/** One of {@linkcode FEATURES}. */
export type Feature = (typeof FEATURES)[number];
