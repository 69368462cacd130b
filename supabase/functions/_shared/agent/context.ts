/**
 * What the agent's parts share: their dependencies, the close codes, and the
 * few socket helpers every part needs. The handler builds one context; the
 * generation loop, the commands and the takeover between processes use it.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { ErrorBody, ErrorCode, OutgoingFrame } from "../protocol/frames.ts";
import type { Session } from "../session/session.ts";
import type { SessionRegistry } from "../session/registry.ts";
import type { SessionStore } from "../store/store.ts";
import type { UpstreamClient } from "../model/openrouter.ts";
import type { UserLimits } from "../platform/limits.ts";
import type { Bus } from "../store/bus.ts";
import { CLOSE } from "../protocol/codes.ts";

export { CLOSE } from "../protocol/codes.ts";

/** Why a generation was aborted by us (the abort reason). */
export type AbortWhy = "cancel" | "closed" | "released" | "slow_consumer";

/** Everything the agent needs, injected so tests run it for real. */
export interface AgentDeps {
  config: Config;
  log: Logger;
  store: SessionStore;
  upstream: UpstreamClient;
  sessions: SessionRegistry;
  limits: UserLimits;
  /** Messages between processes; absent when sessions live in memory only. */
  bus?: Bus;
  /** This process's id on the bus. */
  instance?: string;
}

/** The dependencies plus what the parts share at run time. */
export interface AgentContext extends AgentDeps {
  instance: string;
  /** Emits an error frame and counts it. */
  fail(session: Session, code: ErrorCode, message: string, extra?: Partial<ErrorBody>): void;
  answered: AnsweredIds;
}

/** Keeps feedback answerable for recent responses without growing forever. */
const ANSWERED_IDS_KEPT = 1000;

/**
 * The ids of the queries a session answered, so feedback can name only those.
 *
 * @example
 * ```ts
 * const answered = new AnsweredIds();
 * answered.mark(session, "q1");
 * answered.has(session, "q1"); // true
 * ```
 */
export class AnsweredIds {
  readonly #ids = new WeakMap<Session, Set<string>>();

  mark(session: Session, id: string): void {
    let ids = this.#ids.get(session);
    if (!ids) this.#ids.set(session, ids = new Set());
    ids.add(id);
    if (ids.size > ANSWERED_IDS_KEPT) ids.delete(ids.values().next().value!);
  }

  has(session: Session, id: string): boolean {
    return this.#ids.get(session)?.has(id) ?? false;
  }
}

/**
 * Sends a frame that belongs to this socket, not to the session's sequence
 * (`seq: 0`, never replayed).
 *
 * @example
 * ```ts
 * sendSocketFrame(ws, { type: "notification", event: "resumed", content: "…" });
 * ```
 */
export function sendSocketFrame(socket: WebSocket, frame: Record<string, unknown>): void {
  try {
    socket.send(JSON.stringify({ ...frame, seq: 0, timestamp: new Date().toISOString() }));
  } catch {
    // The socket is already gone.
  }
}

/**
 * Closes a socket, ignoring one that is already closing.
 *
 * @example
 * ```ts
 * closeQuietly(session.socket, CLOSE.normal, "Session timeout");
 * ```
 */
export function closeQuietly(socket: WebSocket | null, code: number, reason: string): void {
  try {
    socket?.close(code, reason);
  } catch {
    // Already closing.
  }
}

/**
 * A notification from another function (POST /notify): the sender's `data`
 * fields ride along, but cannot replace the frame's own fields.
 *
 * @example
 * ```ts
 * session.emit(notificationFrame("job_done", "Your report is ready", { job: 7 }));
 * ```
 */
export function notificationFrame(
  event: string,
  content: string,
  data: Record<string, unknown> = {},
): OutgoingFrame {
  // Fields that say what the frame is stay the server's: `data` cannot pose as
  // a response (`id`, `done`) or rename the notification.
  const {
    type: _type,
    seq: _seq,
    timestamp: _timestamp,
    id: _id,
    done: _done,
    event: _event,
    content: _content,
    ...extra
  } = data;
  return { ...extra, type: "notification", event, content };
}

/**
 * Tells a socket that another connection took its session, and closes it 4002.
 *
 * @example
 * ```ts
 * sayTakenOver(previousSocket, session.id);
 * ```
 */
export function sayTakenOver(socket: WebSocket, sessionId: string): void {
  sendSocketFrame(socket, {
    type: "notification",
    event: "session_taken_over",
    content: "Another connection resumed this session",
    session_id: sessionId,
  });
  closeQuietly(socket, CLOSE.takenOver, "Session taken over");
}
