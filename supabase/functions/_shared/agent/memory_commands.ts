/**
 * The memory commands: `conversations`, `search_memory` and `clear_memory`.
 * Each reads or changes the conversations of the socket's own user only (the
 * verified user; with auth off, the one shared namespace), so no user can
 * see, clear, or learn of another's.
 *
 * @module
 */
import { z } from "zod";
import type { CommandFrame } from "../protocol/frames.ts";
import { AgentError } from "../protocol/errors.ts";
import type { Session } from "../session/session.ts";
import { CONVERSATION_NAME } from "../session/conversation.ts";
import { StoreError } from "../store/store.ts";
import { DEFAULT_SEARCH_LIMIT, MAX_QUERY_CHARS, MAX_SEARCH_LIMIT } from "../store/memory.ts";

/** The memory commands' names. */
export const MEMORY_COMMANDS = ["conversations", "search_memory", "clear_memory"] as const;

/** Arguments of `search_memory` (also the `search_memory` tool's parameters). */
export const SearchMemoryArgs = z.object({
  query: z.string().trim().min(1, "query must not be empty").max(MAX_QUERY_CHARS)
    .describe("Words to look for in the user's past conversations"),
  limit: z.number().int().min(1).max(MAX_SEARCH_LIMIT).optional()
    .describe(`Most results (1-${MAX_SEARCH_LIMIT}, default ${DEFAULT_SEARCH_LIMIT})`),
});

const ClearMemoryArgs = z.object({
  conversation: z.string().regex(CONVERSATION_NAME, "1-128 of A-Z a-z 0-9 _ . : -").optional(),
});

type Run = (session: Session, frame: CommandFrame) => Promise<void>;

/** Parses a command's args, or throws `invalid_message` listing what is wrong. */
function parseArgs<T>(schema: z.ZodType<T>, frame: CommandFrame): T {
  const parsed = schema.safeParse(frame.args ?? {});
  if (parsed.success) return parsed.data;
  throw new AgentError("invalid_message", `Invalid arguments for ${frame.name}`, {
    issues: parsed.error.issues.slice(0, 10).map((i) => ({
      path: ["args", ...i.path.map(String)].join("."),
      message: i.message,
    })),
  });
}

/** A store that cannot answer is a retryable error, not an internal one. */
async function fromStore<T>(read: Promise<T>): Promise<T> {
  try {
    return await read;
  } catch (err) {
    if (!(err instanceof StoreError)) throw err;
    throw new AgentError("internal_error", "Memory is unavailable right now; try again", {
      retryable: err.retryable,
      retryAfterMs: err.retryable ? 1000 : undefined,
    });
  }
}

/**
 * The memory commands, for the command registry.
 *
 * @example
 * ```ts ignore
 * const run = memoryCommands({ take: () => 0, onCleared: (ids) => bus.publish(…) });
 * await run.search_memory(session, { type: "command", name: "search_memory", args: { query: "tram" } });
 * ```
 */
export function memoryCommands(deps: {
  /** Takes a rate-limit token: 0 when allowed, else ms to wait. Memory commands read the store. */
  take(session: Session): number;
  /** Called with the session ids `clear_memory` cleared, when there are any. */
  onCleared?: (sessionIds: string[]) => void;
}): Record<(typeof MEMORY_COMMANDS)[number], Run> {
  function admit(session: Session): void {
    const wait = deps.take(session);
    if (wait > 0) {
      throw new AgentError("rate_limited", "Too many frames; slow down", {
        retryable: true,
        retryAfterMs: wait,
      });
    }
  }
  return {
    async conversations(session, frame) {
      admit(session);
      const conversations = await fromStore(session.store.conversations(session.owner));
      session.emit({
        type: "notification",
        event: "conversations",
        content: `${conversations.length} conversations`,
        id: frame.id,
        conversations,
      });
    },
    async search_memory(session, frame) {
      const { query, limit } = parseArgs(SearchMemoryArgs, frame);
      admit(session);
      const results = await fromStore(
        session.store.searchMemory(session.owner, query, limit ?? DEFAULT_SEARCH_LIMIT),
      );
      session.emit({
        type: "notification",
        event: "search_memory",
        content: `${results.length} results`,
        id: frame.id,
        query,
        results,
      });
    },
    async clear_memory(session, frame) {
      const { conversation } = parseArgs(ClearMemoryArgs, frame);
      admit(session);
      const ids = await fromStore(session.store.clearMemory(session.owner, conversation));
      if (ids.length > 0) deps.onCleared?.(ids);
      session.emit({
        type: "notification",
        event: "memory_cleared",
        content: conversation === undefined
          ? `Cleared ${ids.length} conversations`
          : `Cleared conversation ${conversation}`,
        id: frame.id,
        ...(conversation === undefined ? {} : { conversation }),
        cleared: ids.length,
      });
    },
  };
}
