/**
 * The few things done to a bare socket, outside any session's sequence:
 * frames that belong to one socket (`seq: 0`, never replayed), the notices a
 * socket gets before it is let go (`shutdown`, `session_taken_over`), and
 * quiet closes.
 *
 * @module
 */

/**
 * Sends a frame that belongs to this socket, not to the session's sequence
 * (`seq: 0`, never replayed).
 *
 * @example
 * ```ts
 * import { sendSocketFrame } from "./socket.ts";
 * export function greet(ws: WebSocket) {
 *   sendSocketFrame(ws, { type: "notification", event: "resumed", content: "…" });
 * }
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
 * import { closeQuietly } from "./socket.ts";
 * import { CLOSE } from "../protocol/codes.ts";
 * closeQuietly(null, CLOSE.normal, "Session timeout"); // a socket already gone is fine
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
 * What a socket is told when another connection takes its (plain) session;
 * it is closed 4002 after.
 *
 * @example
 * ```ts
 * import { takenOverFrame } from "./socket.ts";
 * takenOverFrame("4f1c…").event; // "session_taken_over"
 * ```
 */
export function takenOverFrame(sessionId: string) {
  return {
    type: "notification" as const,
    event: "session_taken_over",
    content: "Another connection resumed this session",
    session_id: sessionId,
  };
}

/**
 * `shutdown`: this server lets the socket go and asks it to reconnect (and
 * resume) — it is closed 1012 after.
 *
 * @example
 * ```ts
 * import { shutdownFrame } from "./socket.ts";
 * shutdownFrame("The server is restarting; reconnect", "sigterm").reconnect; // true
 * ```
 */
export function shutdownFrame(content: string, reason: string) {
  return { type: "notification" as const, event: "shutdown", content, reason, reconnect: true };
}

/**
 * A notification from elsewhere (POST /notify, a hook): the sender's `data`
 * rides along but cannot replace the frame's own fields.
 *
 * @example
 * ```ts
 * import { notificationFrame } from "./socket.ts";
 * notificationFrame("job_done", "Your report is ready", { job: 7 });
 * ```
 */
export function notificationFrame(
  event: string,
  content: string,
  data: Record<string, unknown> = {},
): { type: "notification"; event: string; content: string; [k: string]: unknown } {
  const { type: _t, seq: _s, timestamp: _ts, id: _id, done: _d, event: _e, content: _c, ...extra } =
    data;
  return { ...extra, type: "notification", event, content };
}
