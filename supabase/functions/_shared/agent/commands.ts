/**
 * Control frames: the v1 commands (`cancel`, `reset`, `history`, `stats`) and
 * feedback. Each is answered at once with a notification or one error; none
 * waits behind a generation.
 *
 * @module
 */
import type { AbortWhy, AgentContext } from "./context.ts";
import { COMMAND_NAMES, type CommandFrame, type FeedbackFrame } from "../protocol/frames.ts";
import type { Session } from "../session/session.ts";
import type { Generator } from "../turn/generation.ts";

/** Handles commands and feedback; see {@linkcode createCommands}. */
export interface Commands {
  command(session: Session, frame: CommandFrame): Promise<void>;
  feedback(session: Session, frame: FeedbackFrame): void;
}

/**
 * @example
 * ```ts
 * const commands = createCommands(ctx, generator);
 * await commands.command(session, { type: "command", name: "stats" });
 * ```
 */
export function createCommands(ctx: AgentContext, generator: Generator): Commands {
  const { store, log, fail, answered } = ctx;

  function cancel(session: Session, frame: CommandFrame): void {
    const target = typeof frame.args?.id === "string" ? frame.args.id : session.inFlight?.id;
    if (!target || !session.knows(target)) {
      return fail(session, "not_found", "No query with that id is running or waiting", {
        id: frame.id,
      });
    }
    session.emit({
      type: "notification",
      event: "cancelled",
      content: `Cancelling query ${target}`,
      id: frame.id,
      query_id: target,
    });
    const waiting = session.queue.remove(target);
    if (waiting) {
      generator.endCancelled(session, waiting, "");
      session.syncOpenQueries();
    } else {
      // The generation ends itself with the partial text once the abort lands.
      session.inFlight?.controller.abort("cancel" satisfies AbortWhy);
    }
  }

  function stats(session: Session, frame: CommandFrame): void {
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
      queued: session.queue.size,
      in_flight: session.inFlight?.id ?? null,
      feedback: session.feedback.length,
      age_s: Math.round((Date.now() - session.createdAt) / 1000),
    });
  }

  return {
    async command(session, frame) {
      switch (frame.name as (typeof COMMAND_NAMES)[number]) {
        case "cancel":
          return cancel(session, frame);
        case "reset":
          await store.clearHistory(session.id);
          session.emit({
            type: "notification",
            event: "reset",
            content: "Conversation history cleared",
            id: frame.id,
          });
          return;
        case "history": {
          const messages = await store.history(session.id);
          session.emit({
            type: "notification",
            event: "history",
            content: `${messages.length} messages`,
            id: frame.id,
            messages,
          });
          return;
        }
        case "stats":
          return stats(session, frame);
        default:
          return fail(session, "unknown_command", `Unknown command: ${frame.name}`, {
            id: frame.id,
            issues: [{ path: "name", message: `Known: ${COMMAND_NAMES.join(", ")}` }],
          });
      }
    },

    feedback(session, frame) {
      if (!answered.has(session, frame.id)) {
        return fail(session, "not_found", "No response with that id in this session", {
          id: frame.id,
        });
      }
      session.feedback.push({
        id: frame.id,
        rating: frame.rating,
        comment: frame.comment,
        at: new Date().toISOString(),
      });
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
