/**
 * Conversations by name: `?conversation=<name>` joins the named conversation
 * of the socket's user. A conversation is a session whose id is derived from
 * its owner and name, so every process finds the same one without a lookup,
 * and two users' names never meet.
 *
 * @module
 */

/** What a conversation name may be: 1–128 of `[A-Za-z0-9_.:-]`. */
export const CONVERSATION_NAME = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * Reads `conversation` from a connect URL: null when absent, an error message
 * when it is not a valid name.
 *
 * @example
 * ```ts
 * import { parseConversation } from "./conversation.ts";
 * parseConversation(new URL("ws://h/?conversation=trip-planning")); // "trip-planning"
 * parseConversation(new URL("ws://h/")); // null
 * ```
 */
export function parseConversation(url: URL): string | null | { error: string } {
  const name = url.searchParams.get("conversation");
  if (name === null) return null;
  if (!CONVERSATION_NAME.test(name)) {
    return { error: "conversation must be 1-128 of A-Z a-z 0-9 _ . : -" };
  }
  return name;
}

const encoder = new TextEncoder();

/**
 * The session id of a user's conversation. The owner is part of it, so the
 * same name of two users is two conversations (with auth off, owner null:
 * one shared conversation per name).
 *
 * @example
 * ```ts
 * import { conversationSessionId } from "./conversation.ts";
 * const id = await conversationSessionId("user-1", "trip-planning");
 * id.startsWith("conv_"); // true
 * ```
 */
export async function conversationSessionId(owner: string | null, name: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    encoder.encode(JSON.stringify([owner, name])),
  );
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  return `conv_${hex.slice(0, 40)}`;
}
