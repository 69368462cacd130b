/**
 * Conversations and memory on the client side (protocol v1.1): the name a client joins with,
 * the URL it connects and resumes with, and the typed notifications of presence and of the
 * memory commands.
 *
 * A conversation is a room of one user: every socket that joins it (`?conversation=<name>`)
 * gets every frame of it with the same `seq`, and any of them may ask. Each socket resumes on
 * its own, with its own `last_seq`.
 *
 * @example
 * ```ts
 * import { conversationUrl } from "./conversation.ts";
 * conversationUrl("wss://x.supabase.co/functions/v1/agent_websocket", "trip", 12);
 * // "wss://x.supabase.co/functions/v1/agent_websocket?conversation=trip&last_seq=12"
 * ```
 * @module
 */
import { socketUrl } from "./backoff.ts";
import { AgentError } from "./errors.ts";
import type {
  ConversationSummary,
  FrameBase,
  MemoryHit,
  NotificationBody,
  PresenceBody,
} from "./protocol.ts";

/** What a conversation name may be: 1–128 of `[A-Za-z0-9_.:-]` (the server's rule). */
export const CONVERSATION_NAME: RegExp = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * Returns `name` when it is a valid conversation name; throws `AgentError`
 * `invalid_conversation` otherwise, before anything goes on the wire.
 *
 * @example
 * ```ts
 * import { checkConversation } from "./conversation.ts";
 * checkConversation("trip-2025"); // "trip-2025"
 * try {
 *   checkConversation("no spaces");
 * } catch (e) {
 *   console.log((e as Error).message);
 * }
 * ```
 */
export function checkConversation(name: string): string {
  if (typeof name !== "string" || !CONVERSATION_NAME.test(name)) {
    throw new AgentError(
      "invalid_conversation",
      `Conversation name must be 1-128 of A-Z a-z 0-9 _ . : - (got ${JSON.stringify(name)})`,
    );
  }
  return name;
}

/**
 * The URL that joins conversation `name`, or resumes it after `lastSeq` when given. Other
 * query parameters are kept; `session_id` is dropped (a conversation names its session).
 *
 * @example
 * ```ts
 * import { conversationUrl } from "./conversation.ts";
 * conversationUrl("ws://127.0.0.1:8000/?session_id=old", "notes");
 * // "ws://127.0.0.1:8000/?conversation=notes"
 * ```
 */
export function conversationUrl(
  url: string,
  name: string,
  lastSeq?: number,
): string {
  const u = socketUrl(url);
  u.searchParams.delete("session_id");
  u.searchParams.delete("last_seq");
  u.searchParams.set("conversation", name);
  if (lastSeq !== undefined) u.searchParams.set("last_seq", String(lastSeq));
  return u.toString();
}

/**
 * `notification` `presence`: a socket joined or left the conversation.
 *
 * @example
 * ```ts
 * import type { PresenceFrame } from "./conversation.ts";
 * const show = (p: PresenceFrame) => `${p.sockets} open${p.joined ? `, ${p.joined} joined` : ""}`;
 * ```
 */
export type PresenceFrame = PresenceBody & FrameBase;

/**
 * The answer to the `conversations` command: the user's conversations, newest first.
 *
 * @example
 * ```ts
 * import type { ConversationsFrame } from "./conversation.ts";
 * const names = (f: ConversationsFrame) => f.conversations.map((c) => c.name);
 * ```
 */
export type ConversationsFrame = NotificationBody & FrameBase & {
  event: "conversations";
  conversations: ConversationSummary[];
};

/**
 * The answer to the `search_memory` command: hits across the user's conversations, best first.
 *
 * @example
 * ```ts
 * import type { SearchMemoryFrame } from "./conversation.ts";
 * const top = (f: SearchMemoryFrame) => f.results[0]?.content;
 * ```
 */
export type SearchMemoryFrame = NotificationBody & FrameBase & {
  event: "search_memory";
  query: string;
  results: MemoryHit[];
};

/**
 * The answer to the `clear_memory` command: `cleared` conversations were emptied (their history
 * and searchable messages gone; they stay, empty) — the one named in `conversation`, or all.
 *
 * @example
 * ```ts
 * import type { MemoryClearedFrame } from "./conversation.ts";
 * const say = (f: MemoryClearedFrame) => `${f.cleared} emptied (${f.conversation ?? "all"})`;
 * ```
 */
export type MemoryClearedFrame = NotificationBody & FrameBase & {
  event: "memory_cleared";
  conversation?: string;
  cleared: number;
};

/**
 * Options of `AgentClient.searchMemory`.
 *
 * @example
 * ```ts
 * import type { SearchMemoryOptions } from "./conversation.ts";
 * const opts: SearchMemoryOptions = { limit: 5 };
 * ```
 */
export interface SearchMemoryOptions {
  /** At most this many hits: 1–50, the server's default 10. */
  limit?: number;
}
