/**
 * The model backend: what the agent asks a language model, and the typed
 * events it gets back. A backend is an async iterable, so the turn pulls
 * events at its own pace — a client that falls behind pauses the model read
 * instead of growing a buffer. OpenRouter (any OpenAI-compatible server) is
 * the default backend; bring your own by implementing {@linkcode ModelBackend}.
 *
 * @module
 */
import type { Usage } from "../protocol/wire.ts";
import type { ErrorCode } from "../protocol/codes.ts";

/** A tool call as the model asked for it, kept in history. */
export interface ToolCallMessage {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** One message of a conversation, in OpenAI/OpenRouter chat form. */
export type ChatMessage =
  | { role: "system"; content: string }
  | { role: "user"; content: string }
  | { role: "assistant"; content: string | null; tool_calls?: ToolCallMessage[] }
  | { role: "tool"; tool_call_id: string; content: string };

/** A tool the model may call, described for it. */
export interface ModelTool {
  name: string;
  description: string;
  /** A JSON Schema object for the arguments. */
  parameters: Record<string, unknown>;
}

/** What the agent asks the model. */
export interface ModelRequest {
  model: string;
  messages: ChatMessage[];
  tools?: ModelTool[];
  temperature?: number;
  maxTokens?: number;
  /** A stable, non-identifying per-user id (OpenRouter's abuse isolation). */
  user?: string;
  /** Anything else the backend passes through to the provider as is. */
  extra?: Record<string, unknown>;
}

/** What a model streams back. */
export type ModelEvent =
  /** A piece of the answer. */
  | { type: "text"; text: string }
  /** A piece of the model's reasoning, kept apart from the answer. */
  | { type: "reasoning"; text: string }
  /** A complete tool call; `arguments` is the model's JSON text, unparsed. */
  | { type: "tool_call"; id: string; name: string; arguments: string }
  | { type: "usage"; usage: Usage }
  /** The backend is retrying before anything was streamed. */
  | { type: "retry"; attempt: number; delayMs: number; code: ErrorCode }
  /** The last event: why the model stopped, and which model answered. */
  | { type: "finish"; reason: string; model: string };

/**
 * A language model. `stream` yields events until a `finish`, and throws an
 * `AgentError` (from protocol/errors.ts) when the call fails; it stops at
 * once when `signal` aborts.
 *
 * @example
 * ```ts
 * import type { ModelBackend } from "./model.ts";
 * // A backend that echoes the user, as the tests' second backend does.
 * const echo: ModelBackend = {
 *   name: "echo",
 *   defaultModel: "echo-1",
 *   async *stream(req) {
 *     const last = req.messages[req.messages.length - 1];
 *     yield { type: "text", text: String(last.content) };
 *     yield { type: "finish", reason: "stop", model: "echo-1" };
 *   },
 * };
 * ```
 */
export interface ModelBackend {
  /** Shown in logs and in the `connected` notification. */
  readonly name: string;
  /** The model asked for when a query names none. */
  readonly defaultModel: string;
  /** Whether it can answer at all (e.g. an API key is set); shown to clients when not. */
  readonly configured?: boolean;
  stream(req: ModelRequest, signal: AbortSignal): AsyncIterable<ModelEvent>;
}
