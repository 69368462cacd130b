/**
 * Memory: what both stores share about remembering conversations — which
 * messages are kept for search, how a query is split into search terms, and
 * the bounds of every answer. The stores keep and search; this says what.
 *
 * A query is split into terms at white space, and a message matches when it
 * holds any of them; the more terms it holds, the better it ranks. Quotes,
 * `-` and `or` are taken as plain text, so no input is an error.
 *
 * @module
 */
import type { ChatMessage } from "../model/model.ts";

/** Retention of a conversation after its last activity, unless configured. */
export const DEFAULT_CONVERSATION_RETENTION_DAYS = 30;

/**
 * Messages one conversation keeps, unless configured (`MEMORY_MAX_MESSAGES`):
 * past it the oldest said are dropped, so one busy conversation cannot grow
 * its memory without bound while it stays active.
 */
export const DEFAULT_MEMORY_MAX_MESSAGES = 5000;

/** Most conversations `conversations` lists (the most recently active). */
export const MAX_CONVERSATIONS_LISTED = 100;

/** Most hits one search returns. */
export const MAX_SEARCH_LIMIT = 50;

/** Hits when the asker does not say. */
export const DEFAULT_SEARCH_LIMIT = 10;

/** Longest search query, in characters. */
export const MAX_QUERY_CHARS = 500;

/** Characters of a message a hit carries; the rest is cut. */
export const HIT_CHARS = 2000;

/** Terms of a query that count; the rest are ignored. */
export const MAX_TERMS = 32;

/** Characters of one message kept for search (an answer may be far longer). */
export const MEMORY_MESSAGE_CHARS = 100_000;

/** A message kept for search. */
export interface MemoryMessage {
  role: "user" | "assistant";
  content: string;
}

/**
 * The messages of a history worth searching: what the user and the assistant
 * said, not tool traffic nor empty assistant turns that only called tools.
 *
 * @example
 * ```ts
 * import { memorable } from "./memory.ts";
 * memorable([
 *   { role: "user", content: "hi" },
 *   { role: "assistant", content: null, tool_calls: [] },
 *   { role: "assistant", content: "hello" },
 * ]); // [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }]
 * ```
 */
export function memorable(messages: ChatMessage[]): MemoryMessage[] {
  const out: MemoryMessage[] = [];
  for (const m of messages) {
    if ((m.role !== "user" && m.role !== "assistant") || !m.content || !m.content.trim()) continue;
    out.push({ role: m.role, content: m.content.slice(0, MEMORY_MESSAGE_CHARS) });
  }
  return out;
}

const WORD = /[\p{L}\p{N}]+/gu;
const HAS_WORD = /[\p{L}\p{N}]/u;

/**
 * The terms of a search query: its white-space separated pieces, lower-cased,
 * without quotes or a leading `-`, each holding at least a letter or digit;
 * at most {@linkcode MAX_TERMS}, each once. Empty when nothing is searchable.
 *
 * @example
 * ```ts
 * import { searchTerms } from "./memory.ts";
 * searchTerms('  "Trip" to -Lisbon or PORTO!! '); // ["trip", "to", "lisbon", "porto!!"]
 * searchTerms("?!"); // []
 * ```
 */
export function searchTerms(query: string): string[] {
  const terms = new Set<string>();
  for (const piece of query.toLowerCase().split(/\s+/u)) {
    const term = piece.replaceAll('"', "").replace(/^-+/, "");
    // `or` joins terms in Postgres' web search syntax; alone it means nothing.
    if (term === "or" || !HAS_WORD.test(term)) continue;
    terms.add(term);
    if (terms.size === MAX_TERMS) break;
  }
  return [...terms];
}

/**
 * How many of the terms a text holds: a term counts when every word in it is
 * a word of the text (no stemming: "tram" does not find "trams").
 *
 * @example
 * ```ts
 * import { matchCount } from "./memory.ts";
 * matchCount(["lisbon", "porto", "tram"], "Trams in Lisbon are yellow"); // 1
 * ```
 */
export function matchCount(terms: string[], text: string): number {
  const words = new Set(text.toLowerCase().match(WORD) ?? []);
  let n = 0;
  for (const term of terms) {
    const parts = term.match(WORD) ?? [];
    if (parts.length > 0 && parts.every((p) => words.has(p))) n++;
  }
  return n;
}

/**
 * A hit's content: at most {@linkcode HIT_CHARS} characters.
 *
 * @example
 * ```ts
 * import { hitContent } from "./memory.ts";
 * hitContent("x".repeat(5000)).length; // 2001 (with the ellipsis)
 * ```
 */
export function hitContent(content: string): string {
  return content.length > HIT_CHARS ? `${content.slice(0, HIT_CHARS)}…` : content;
}
