/**
 * Commands: the built-in ones (`cancel`, `reset`, `history`, `stats`, and
 * memory's `conversations`, `search_memory`, `clear_memory`) and the
 * deployer's, in one registry, so `unknown_command` lists them all. Each is
 * answered at once with a notification carrying the command's `id`, or one
 * error; none waits behind a query. Feedback is answered here too.
 *
 * @module
 */
import type { CommandFrame, FeedbackFrame } from "../protocol/frames.ts";
import { AgentError } from "../protocol/errors.ts";
import type { Logger } from "../platform/log.ts";
import type { Session } from "../session/session.ts";
import type { CommandContext, CommandHandler } from "./definition.ts";
import { MEMORY_COMMANDS, memoryCommands } from "./memory_commands.ts";

/** The names of the commands every agent has. */
export const BUILTIN_COMMANDS = [
  "cancel",
  "reset",
  "history",
  "stats",
  ...MEMORY_COMMANDS,
] as const;

type Run = (session: Session, frame: CommandFrame) => void | Promise<void>;

/** Runs commands and feedback; see {@linkcode createCommands}. */
export interface Commands {
  /** Every command name, built-in first. */
  readonly names: string[];
  /** Runs a command; throws an `AgentError` for the client. */
  command(session: Session, frame: CommandFrame): Promise<void>;
  feedback(session: Session, frame: FeedbackFrame): void;
}

/**
 * @example
 * ```ts ignore
 * const commands = createCommands({ log, own: { ping2: () => ({ content: "pong" }) }, contextFor });
 * await commands.command(session, { type: "command", name: "stats" });
 * ```
 */
export function createCommands(deps: {
  log: Logger;
  /** Takes a rate-limit token for a session: 0 when allowed, else ms to wait. */
  take(session: Session): number;
  own: Record<string, CommandHandler>;
  contextFor(session: Session, commandId?: string): CommandContext;
  /**
   * Conversations were cleared by `clear_memory`: the processes holding them
   * must drop their cached history (the runtime tells them through the bus).
   */
  onMemoryCleared?: (sessionIds: string[]) => void;
}): Commands {
  const { log } = deps;
  const builtin: Record<(typeof BUILTIN_COMMANDS)[number], Run> = {
    cancel(session, frame) {
      const id = typeof frame.args?.id === "string" ? frame.args.id : undefined;
      session.turns.cancel(id, (target) =>
        session.emit({
          type: "notification",
          event: "cancelled",
          content: `Cancelling query ${target}`,
          id: frame.id,
          query_id: target,
        }));
    },
    async reset(session, frame) {
      await session.store.clearHistory(session.id);
      session.emit({
        type: "notification",
        event: "reset",
        content: "Conversation history cleared",
        id: frame.id,
      });
    },
    async history(session, frame) {
      const messages = await session.store.history(session.id);
      session.emit({
        type: "notification",
        event: "history",
        content: `${messages.length} messages`,
        id: frame.id,
        messages,
      });
    },
    stats(session, frame) {
      const c = session.counters;
      session.emit({
        type: "notification",
        event: "stats",
        content: "Session statistics",
        id: frame.id,
        session_id: session.id,
        queries: c.queries,
        responses: c.responses,
        errors: c.errors,
        cancelled: c.cancelled,
        completion_tokens: c.completionTokens,
        queued: session.turns.waiting,
        in_flight: session.turns.inFlight?.id ?? null,
        feedback: session.feedback.size,
        age_s: Math.round((Date.now() - session.createdAt) / 1000),
      });
    },
    ...memoryCommands({ take: deps.take, onCleared: deps.onMemoryCleared }),
  };
  const registry = new Map<string, Run>(Object.entries(builtin));
  for (const [name, handler] of Object.entries(deps.own)) {
    if (registry.has(name)) throw new Error(`Command "${name}" is built in; pick another name`);
    if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(name)) {
      throw new Error(`Command name "${name}" must be 1-64 of [A-Za-z0-9_.:-]`);
    }
    registry.set(name, async (session, frame) => {
      const result = await handler(frame.args ?? {}, deps.contextFor(session, frame.id));
      const { event, content, ...rest } = result ?? {};
      session.emit({
        ...rest,
        type: "notification",
        event: typeof event === "string" && event !== "" ? event : name,
        content: typeof content === "string" ? content : "",
        id: frame.id,
      });
    });
  }
  const names = [...registry.keys()];

  return {
    names,
    async command(session, frame) {
      const run = registry.get(frame.name);
      if (!run) {
        throw new AgentError("unknown_command", `Unknown command: ${frame.name}`, {
          issues: [{ path: "name", message: `Known: ${names.join(", ")}` }],
        });
      }
      await run(session, frame);
    },

    feedback(session, frame) {
      if (!session.turns.answered(frame.id)) {
        throw new AgentError("not_found", "No response with that id in this session");
      }
      const wait = deps.take(session);
      if (wait > 0) {
        throw new AgentError("rate_limited", "Too many frames; slow down", {
          retryable: true,
          retryAfterMs: wait,
        });
      }
      const kept = session.feedback.add({
        id: frame.id,
        rating: frame.rating,
        comment: frame.comment,
        at: new Date().toISOString(),
      });
      if (kept === "full") {
        throw new AgentError("queue_full", "This session holds as much feedback as it may");
      }
      log.info("feedback", { session: session.id, query: frame.id, rating: frame.rating });
      session.emit({
        type: "notification",
        event: "feedback_received",
        content: "Thanks for the feedback",
        id: frame.id,
        rating: frame.rating,
      });
    },
  };
}
