/**
 * The frames of the Agent WebSocket protocol (v1 and the v1.1 additions), as
 * they travel on the wire. Written once: the server builds these and the
 * client SDK reads them. Types only, no dependencies.
 *
 * @example
 * ```ts
 * import type { ServerFrame } from "./wire.ts";
 * const onFrame = (f: ServerFrame) => console.log(f.seq, f.type);
 * ```
 *
 * @module
 */
import type { ErrorCode } from "./codes.ts";

/** Fields every server frame carries. */
export interface FrameBase {
  /** 1-based, +1 per frame of the session, across reconnects; 0 for frames about one socket. */
  seq: number;
  timestamp: string;
  /** The query or command this frame belongs to. */
  id?: string;
  /**
   * In a conversation: the one socket this frame answers (its `socket_id`), e.g.
   * a `pong` or an error about that socket's bad frame. Other sockets of the
   * conversation count its `seq` and otherwise ignore it.
   */
  socket?: string;
}

/**
 * Lifecycle and system messages (`connected`, `resumed`, `session_timeout`,
 * `shutdown`, `history`, `stats`, `reset`, `cancelled`, `feedback_received`,
 * and a deployer's own events).
 */
export interface NotificationBody {
  id?: string;
  type: "notification";
  event: string;
  content?: string;
  session_id?: string;
  [field: string]: unknown;
}

/** A `notification` frame as sent: its body plus `seq` and `timestamp`. */
export type NotificationFrame = NotificationBody & FrameBase;

/**
 * `notification` `presence`: sent to the whole conversation when a socket
 * joins or leaves it.
 */
export interface PresenceBody extends NotificationBody {
  event: "presence";
  /** How many sockets are attached now, on every process. */
  sockets: number;
  /** The socket that joined, if one did. */
  joined?: string;
  /** The socket that left, if one did. */
  left?: string;
}

/** One of the user's conversations, as the `conversations` command lists them. */
export interface ConversationSummary {
  name: string;
  /** Messages kept (user and assistant). */
  messages: number;
  /** ISO 8601: the last message or join. */
  updated_at: string;
}

/** One hit of `search_memory`, best first. */
export interface MemoryHit {
  conversation: string;
  role: "user" | "assistant";
  content: string;
  /** ISO 8601: when the message was said. */
  timestamp: string;
  /** Higher is better; only comparable within one answer. */
  score: number;
}

/** The `status` states the server sends. */
export type StatusState = "queued" | "thinking" | "retrying" | "cancelled";

/** Progress of a query. */
export interface StatusBody {
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
  /** With `thinking`: which model call of the query this is (1, 2, …). */
  iteration?: number;
  /** In a conversation, on a query's first frame: the question, for the sockets that did not ask. */
  question?: string;
  /** In a conversation, on a query's first frame: the `socket_id` of the socket that asked. */
  asked_by?: string;
  [field: string]: unknown;
}

/** A `status` frame as sent: its body plus `seq` and `timestamp`. */
export type StatusFrame = StatusBody & FrameBase;

/** Token usage as the model reported it. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cost?: number;
}

/** How long a query took: to its first token, and in all. */
export interface Timing {
  first_token_ms: number | null;
  total_ms: number;
}

/** A piece of the answer (`done: false`, with `delta`) or the whole of it (`done: true`). */
export interface ResponseBody {
  type: "response";
  id: string;
  delta?: string;
  content?: string;
  done: boolean;
  model?: string;
  /** `"stop"`, `"length"`, `"cancelled"`, `"max_iterations"`, … */
  finish_reason?: string;
  /** Null when the model did not report usage. */
  usage?: Usage | null;
  timing?: Timing;
  /** Model calls this query made (tools make more than one). */
  iterations?: number;
  /** Tool calls this query made. */
  tool_calls?: number;
  /** The model's whole reasoning, when it streamed any. */
  reasoning?: string;
  [field: string]: unknown;
}

/** A `response` frame as sent: its body plus `seq` and `timestamp`. */
export type ResponseFrame = ResponseBody & FrameBase;

/** The terminal `response` frame of a query: `content` is the whole text. */
export type FinalResponse = ResponseFrame & { done: true; content: string };

/** The model's reasoning, streamed apart from the answer. */
export interface ReasoningBody {
  type: "reasoning";
  id: string;
  delta: string;
}

/** A `reasoning` frame as sent: its body plus `seq` and `timestamp`. */
export type ReasoningFrame = ReasoningBody & FrameBase;

/** Who runs a tool. */
export type ToolExecutor = "server" | "client";

/** The model asked for a tool; its arguments are complete and parsed. */
export interface ToolCallBody {
  type: "tool_call";
  id: string;
  tool_call_id: string;
  tool: string;
  arguments: Record<string, unknown>;
  iteration: number;
  executor: ToolExecutor;
  needs_approval: boolean;
}

/** A `toolcall` frame as sent: its body plus `seq` and `timestamp`. */
export type ToolCallFrame = ToolCallBody & FrameBase;

/** A tool finished, failed, was denied or timed out. */
export interface ToolResultBody {
  type: "tool_result";
  id: string;
  tool_call_id: string;
  tool: string;
  ok: boolean;
  result?: unknown;
  error?: string;
  duration_ms: number;
}

/** A `toolresult` frame as sent: its body plus `seq` and `timestamp`. */
export type ToolResultFrame = ToolResultBody & FrameBase;

/** Anything that went wrong. With the `id` of a query, it is that query's terminal frame. */
export interface ErrorBody {
  id?: string;
  type: "error";
  code: ErrorCode;
  message: string;
  retryable: boolean;
  retry_after_ms?: number;
  issues?: { path: string; message: string }[];
  /** With `not_found` for a tool answer: the call it named. */
  tool_call_id?: string;
  [field: string]: unknown;
}

/** A `error` frame as sent: its body plus `seq` and `timestamp`. */
export type ErrorFrame = ErrorBody & FrameBase;

/** The answer to a `ping`. */
export interface PongBody {
  id?: string;
  type: "pong";
  [field: string]: unknown;
}

/** A `pong` frame as sent: its body plus `seq` and `timestamp`. */
export type PongFrame = PongBody & FrameBase;

/** A frame body before the session stamps `seq` and `timestamp` on it. */
export type OutgoingFrame =
  | NotificationBody
  | StatusBody
  | ResponseBody
  | ReasoningBody
  | ToolCallBody
  | ToolResultBody
  | ErrorBody
  | PongBody;

/** Any frame the server sends. */
export type ServerFrame =
  | NotificationFrame
  | StatusFrame
  | ResponseFrame
  | ReasoningFrame
  | ToolCallFrame
  | ToolResultFrame
  | ErrorFrame
  | PongFrame;

/** A client tool, declared with a query: the client runs it. */
export interface ClientToolDeclaration {
  name: string;
  description?: string;
  /** A JSON Schema object describing the arguments. */
  parameters?: Record<string, unknown>;
  /** Ask a human before the client runs it. */
  needs_approval?: boolean;
}

/** A question for the agent. */
export interface QueryFrame {
  type: "query";
  content: string;
  id?: string;
  model?: string;
  stream?: boolean;
  metadata?: Record<string, unknown>;
  tools?: ClientToolDeclaration[];
}

/** Any frame a client may send. */
export type ClientFrame =
  | QueryFrame
  | { type: "command"; name: string; id?: string; args?: Record<string, unknown> }
  | { type: "feedback"; id: string; rating: "up" | "down"; comment?: string }
  | { type: "ping"; id?: string }
  | {
    type: "tool_result";
    id: string;
    tool_call_id: string;
    result?: unknown;
    error?: string;
  }
  | { type: "approval"; id: string; tool_call_id: string; approved: boolean; reason?: string };
