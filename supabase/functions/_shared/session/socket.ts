/**
 * The few things done to a bare socket, outside any session's sequence:
 * frames that belong to one socket (`seq: 0`, never replayed) and quiet closes.
 *
 * @module
 */
import { CLOSE } from "../protocol/codes.ts";

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
 * Tells a socket that another connection took its session, and closes it 4002.
 *
 * @example
 * ```ts
 * import { sayTakenOver } from "./socket.ts";
 * export function handOver(previous: WebSocket) {
 *   sayTakenOver(previous, "4f1c…");
 * }
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
