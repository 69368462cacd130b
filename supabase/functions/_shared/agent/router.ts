/**
 * Client frames, from whichever socket of a session they come (here or on
 * another process): checked, parsed and routed — queries to the session's
 * turns (after admission: draining, configuration, model, tools, budget,
 * rate), commands, feedback, tool answers, pings. It is the one boundary
 * where a thrown `AgentError` becomes an `error` frame for a client frame;
 * the turn renders its own.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { UserLimits } from "../platform/limits.ts";
import type { ModelBackend } from "../model/model.ts";
import { CLOSE } from "../protocol/codes.ts";
import { AgentError, errorFrame } from "../protocol/errors.ts";
import {
  type ClientFrame,
  frameBytes,
  parseClientFrame,
  type QueryFrame,
} from "../protocol/frames.ts";
import type { Peer, Session } from "../session/session.ts";
import type { Commands } from "./commands.ts";
import type { ToolSet } from "./tools.ts";

type ToolAnswerFrame = Extract<ClientFrame, { type: "tool_result" | "approval" }>;

/** What the router needs. */
export interface RouterDeps {
  config: Config;
  log: Logger;
  limits: UserLimits;
  model: ModelBackend;
  tools: ToolSet;
  commands: Commands;
  /** The models a query may ask for. */
  allowedModels: string[];
  /** Why this process takes no new queries (it is handing over); null while it does. */
  draining(): string | null;
  /** Refuses a user who has spent their day's budget (throws `budget_exceeded`). */
  checkBudget(session: Session): void;
}

/** See {@linkcode createRouter}. */
export interface Router {
  /**
   * Handles one client frame from `peer`; never throws. `retry`: the frame
   * may have been handled already (a process that held the session went
   * silent before saying): a query this session knows, or a tool answer
   * nobody awaits, is dropped instead of refused.
   */
  dispatch(session: Session, data: unknown, peer: Peer, retry?: boolean): void;
  /** Renders what handling a client frame threw, as one error frame (to `peer` alone, if given). */
  reject(session: Session, err: unknown, id?: string, peer?: Peer): void;
}

/**
 * @example
 * ```ts ignore
 * const router = createRouter({ config, log, limits, model, tools, commands, allowedModels,
 *   draining: () => null, checkBudget: () => {} });
 * socket.onmessage = (e) => router.dispatch(session, e.data, peer);
 * ```
 */
export function createRouter(deps: RouterDeps): Router {
  const { config, log, limits, model, tools, commands, allowedModels } = deps;

  function reject(session: Session, err: unknown, id?: string, peer?: Peer): void {
    if (!(err instanceof AgentError)) {
      log.error("frame_handler_failed", { session: session.id, err: String(err).slice(0, 300) });
    }
    session.counters.errors++;
    // An error naming a query is that query's terminal frame: everyone needs it.
    session.emit(errorFrame(err, id), id === undefined ? peer : undefined);
  }

  function admit(session: Session, frame: QueryFrame, id: string, peer: Peer): void {
    if (deps.draining()) {
      throw new AgentError("draining", "This server is handing over; reconnect and send it again", {
        retryable: true,
        retryAfterMs: 0,
      });
    }
    if (model.configured === false) {
      throw new AgentError(
        "not_configured",
        "The server has no OPENROUTER_API_KEY configured, so it cannot answer",
      );
    }
    if (frame.model !== undefined && !allowedModels.includes(frame.model)) {
      throw new AgentError("model_not_allowed", `Model is not allowed here: ${frame.model}`, {
        issues: [{ path: "model", message: `Allowed: ${allowedModels.join(", ")}` }],
      });
    }
    // Checked before the rate limit: a bad declaration must not cost a token.
    if (frame.tools) tools.forQuery(frame.tools);
    deps.checkBudget(session);
    const wait = limits.take(session.rateKey);
    if (wait > 0) {
      throw new AgentError("rate_limited", "Too many queries; slow down", {
        retryable: true,
        retryAfterMs: wait,
      });
    }
    session.turns.submit({
      id,
      content: frame.content,
      model: frame.model,
      stream: frame.stream ?? true,
      metadata: frame.metadata ?? {},
      clientTools: frame.tools ?? [],
      receivedAt: performance.now(),
      askedBy: peer.id,
    });
  }

  function route(session: Session, data: unknown, peer: Peer, retry: boolean): void {
    session.lastActivity = Date.now();
    if (typeof data !== "string") {
      throw new AgentError(
        "unsupported_frame",
        "Binary frames are not supported; send JSON text",
      );
    }
    const bytes = frameBytes(data, config.maxMessageBytes);
    if (bytes > config.hardMaxMessageBytes) {
      session.counters.errors++;
      peer.close(CLOSE.tooLarge, "Message too large");
      return;
    }
    if (bytes > config.maxMessageBytes) {
      throw new AgentError(
        "message_too_large",
        `Frame is ${bytes} bytes; the limit is ${config.maxMessageBytes}`,
      );
    }
    const parsed = parseClientFrame(data, config.maxContentChars);
    if (!parsed.ok) {
      session.counters.errors++;
      session.emit(parsed.error, parsed.error.id === undefined ? peer : undefined);
      return;
    }
    const frame = parsed.frame;
    switch (frame.type) {
      case "ping":
        session.emit({ type: "pong", ...(frame.id !== undefined ? { id: frame.id } : {}) }, peer);
        return;
      case "query": {
        const id = frame.id ?? crypto.randomUUID();
        if (retry && (session.turns.knows(id) || session.turns.answered(id))) {
          return log.info("retry_dropped", { session: session.id, id });
        }
        try {
          return admit(session, frame, id, peer);
        } catch (err) {
          return reject(session, err, id, peer);
        }
      }
      case "command":
        commands.command(session, frame).catch((err) => reject(session, err, frame.id, peer));
        return;
      case "feedback":
        try {
          return commands.feedback(session, frame);
        } catch (err) {
          return reject(session, err, frame.id, peer);
        }
      case "tool_result":
      case "approval":
        try {
          return answer(session, frame);
        } catch (err) {
          if (retry) return log.info("retry_dropped", { session: session.id, id: frame.id });
          throw err;
        }
    }
  }

  function answer(session: Session, frame: ToolAnswerFrame): void {
    switch (frame.type) {
      case "tool_result":
        return session.turns.answer(frame.id, frame.tool_call_id, {
          kind: "tool_result",
          result: frame.result,
          error: frame.error,
        });
      case "approval":
        return session.turns.answer(frame.id, frame.tool_call_id, {
          kind: "approval",
          approved: frame.approved,
          reason: frame.reason,
        });
    }
  }

  return {
    reject,
    dispatch(session, data, peer, retry = false) {
      try {
        route(session, data, peer, retry);
      } catch (err) {
        // Tool answers name their call, not the query: an error with a query's id would end it.
        reject(session, err, undefined, peer);
      }
    },
  };
}
