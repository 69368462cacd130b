/**
 * A turn that waits for people — a human's approval, a client's tool result —
 * written down so that another process can carry it on if this one stops:
 * the conversation so far, the tool calls of the current model turn, and the
 * results already in. Only the durable store keeps it.
 *
 * @module
 */
import type { ChatMessage } from "../model/model.ts";
import type { Usage } from "../protocol/wire.ts";
import type { TurnParams } from "../agent/definition.ts";
import type { PendingQuery } from "./queue.ts";

/** A tool call of the model turn being answered. */
export interface CheckpointCall {
  id: string;
  name: string;
  arguments: string;
}

/** Everything needed to carry a waiting turn on elsewhere. */
export interface TurnCheckpoint {
  /** The query, without its process-local receive time. */
  query: Omit<PendingQuery, "receivedAt">;
  modelName: string;
  params: TurnParams | null;
  /** What the next model call is sent, up to the tool calls below. */
  messages: ChatMessage[];
  /** What the turn will add to the history when it ends. */
  added: ChatMessage[];
  iterations: number;
  toolCalls: number;
  usage: Usage | null;
  reasoning: string;
  /** The answer text streamed so far, over all model calls. */
  content: string;
  firstTokenMs: number | null;
  /** The model turn's own text, before its tool calls. */
  text: string;
  calls: CheckpointCall[];
  /** Results already in, by tool call id: what the model will be told. */
  finished: Record<string, string>;
}

/**
 * Whether a value read back from the store looks like a checkpoint (it is our
 * own write, but a row may predate a change of shape).
 *
 * @example
 * ```ts
 * import { isCheckpoint } from "./checkpoint.ts";
 * isCheckpoint({}); // false
 * ```
 */
export function isCheckpoint(v: unknown): v is TurnCheckpoint {
  if (typeof v !== "object" || v === null) return false;
  const c = v as Record<string, unknown>;
  return typeof c.query === "object" && c.query !== null && Array.isArray(c.messages) &&
    Array.isArray(c.calls) && typeof c.finished === "object" && c.finished !== null;
}
