/**
 * Wire types of the Agent WebSocket protocol v1: the frames the server sends and the frames a
 * client may send. Types only, plus the subprotocol name.
 *
 * @example
 * ```ts
 * import type { ServerFrame } from "./protocol.ts";
 * const onFrame = (f: ServerFrame) => console.log(f.seq, f.type);
 * ```
 * @module
 */

/**
 * The subprotocol offered on every connection.
 *
 * @example
 * ```ts
 * new WebSocket(url, [PROTOCOL]);
 * ```
 */
export const PROTOCOL = "agent-websocket.v1";

/**
 * Fields every server frame carries.
 *
 * @example
 * ```ts
 * const f: FrameBase = { seq: 1, timestamp: new Date().toISOString() };
 * ```
 */
export interface FrameBase {
  /** 1-based, +1 per frame of the session, across reconnects. */
  seq: number;
  timestamp: string;
  /** Query or command this frame belongs to. */
  id?: string;
}

/**
 * Lifecycle and system messages (`connected`, `resumed`, `session_timeout`, `shutdown`,
 * `history`, `stats`, `reset`, `cancelled`, `feedback_received`, ...).
 *
 * @example
 * ```ts
 * client.on("notification", (n: NotificationFrame) => console.log(n.event, n.content));
 * ```
 */
export interface NotificationFrame extends FrameBase {
  type: "notification";
  event: string;
  content?: string;
  session_id?: string;
  [field: string]: unknown;
}

/**
 * Known `status` states; servers may add more.
 *
 * @example
 * ```ts
 * const s: StatusState = "thinking";
 * ```
 */
export type StatusState =
  | "queued"
  | "thinking"
  | "retrying"
  | "cancelled"
  | "tool_call"
  | "tool_result"
  | (string & Record<never, never>);

/**
 * Progress of a query.
 *
 * @example
 * ```ts
 * client.on("status", (s: StatusFrame) => s.state === "queued" && console.log(s.position));
 * ```
 */
export interface StatusFrame extends FrameBase {
  type: "status";
  id: string;
  state: StatusState;
  content?: string;
  /** With `queued`. */
  position?: number;
  /** With `retrying`. */
  attempt?: number;
  /** With `retrying`. */
  delay_ms?: number;
  [field: string]: unknown;
}

/**
 * Token usage reported by the upstream model.
 *
 * @example
 * ```ts
 * const u: Usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
 * ```
 */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cost?: number;
}

/**
 * A piece of the answer (`done: false`, with `delta`) or the whole of it (`done: true`).
 *
 * @example
 * ```ts
 * client.on("response", (r: ResponseFrame) => r.delta && console.log(r.delta));
 * ```
 */
export interface ResponseFrame extends FrameBase {
  type: "response";
  id: string;
  delta?: string;
  content?: string;
  done: boolean;
  model?: string;
  /** `"stop"`, `"length"`, `"cancelled"`, ... */
  finish_reason?: string;
  /** Null when the upstream did not report usage. */
  usage?: Usage | null;
  timing?: { first_token_ms?: number | null; total_ms: number };
  [field: string]: unknown;
}

/**
 * The terminal `response` frame of a query: `content` is the whole text.
 *
 * @example
 * ```ts
 * const final: FinalResponse = await client.ask("hi").response;
 * console.log(final.content, final.finish_reason);
 * ```
 */
export type FinalResponse = ResponseFrame & { done: true; content: string };

/**
 * Anything that went wrong on the server.
 *
 * @example
 * ```ts
 * client.on("frame", (f) => f.type === "error" && console.log((f as ErrorFrame).code));
 * ```
 */
export interface ErrorFrame extends FrameBase {
  type: "error";
  code: string;
  message: string;
  retryable: boolean;
  retry_after_ms?: number;
  issues?: { path: (string | number)[]; message: string }[];
  [field: string]: unknown;
}

/**
 * Answer to a `ping`.
 *
 * @example
 * ```ts
 * client.on("pong", (p: PongFrame) => console.log("pong", p.id));
 * ```
 */
export interface PongFrame extends FrameBase {
  type: "pong";
  [field: string]: unknown;
}

/**
 * Any frame the server sends.
 *
 * @example
 * ```ts
 * client.on("frame", (f: ServerFrame) => console.log(f.seq, f.type));
 * ```
 */
export type ServerFrame =
  | NotificationFrame
  | StatusFrame
  | ResponseFrame
  | ErrorFrame
  | PongFrame;

/**
 * Any frame a client may send (see {@link AgentClient.send}).
 *
 * @example
 * ```ts
 * const f: ClientFrame = { type: "command", name: "stats", id: "s1" };
 * ```
 */
export type ClientFrame =
  | {
    type: "query";
    content: string;
    id?: string;
    model?: string;
    stream?: boolean;
    metadata?: Record<string, unknown>;
  }
  | { type: "command"; name: string; id?: string; args?: Record<string, unknown> }
  | { type: "feedback"; id: string; rating: "up" | "down"; comment?: string }
  | { type: "ping"; id?: string };
