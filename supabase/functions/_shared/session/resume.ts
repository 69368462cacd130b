/**
 * Resume: what a reconnecting client with `last_seq = N` must receive — every
 * frame of its session after N, exactly once — or why it cannot.
 *
 * @module
 */
import type { Session } from "./session.ts";
import type { StoredFrame } from "../store/store.ts";

/** Where a client asked to resume: from the connect URL's query string. */
export interface ResumeRequest {
  sessionId: string;
  lastSeq: number;
}

/** What {@linkcode collectReplay} found. */
export type ReplayPlan =
  | { ok: true; frames: StoredFrame[] }
  | { ok: false; code: "not_found" | "resume_gap"; message: string };

/**
 * Reads `session_id` and `last_seq` from a connect URL. Returns null when no
 * resume was asked for, and an error message when the parameters are bad.
 *
 * @example
 * ```ts
 * parseResumeRequest(new URL("ws://h/?session_id=abc&last_seq=7"));
 * // { sessionId: "abc", lastSeq: 7 }
 * ```
 */
export function parseResumeRequest(url: URL): ResumeRequest | null | { error: string } {
  const sessionId = url.searchParams.get("session_id");
  if (sessionId === null || sessionId === "") return null;
  if (sessionId.length > 128) return { error: "session_id is longer than 128 characters" };
  const lastSeq = parseLastSeq(url) ?? 0;
  return typeof lastSeq === "number" ? { sessionId, lastSeq } : lastSeq;
}

/**
 * Reads `last_seq` from a connect URL: null when absent, an error message
 * when it is not a non-negative integer.
 *
 * @example
 * ```ts
 * import { parseLastSeq } from "./resume.ts";
 * parseLastSeq(new URL("ws://h/?conversation=plans&last_seq=12")); // 12
 * ```
 */
export function parseLastSeq(url: URL): number | null | { error: string } {
  const raw = url.searchParams.get("last_seq");
  if (raw === null) return null;
  const lastSeq = Number(raw);
  if (!/^\d{1,15}$/.test(raw) || !Number.isSafeInteger(lastSeq)) {
    return { error: "last_seq must be a non-negative integer" };
  }
  return lastSeq;
}

/**
 * Collects every frame of `session` after `lastSeq`. It loops because frames
 * may be emitted while the store is read; it returns only once the frames it
 * holds reach the session's current seq, so that a caller who attaches the
 * socket in the same tick misses nothing and repeats nothing.
 *
 * @example
 * ```ts
 * import { collectReplay } from "./resume.ts";
 * import type { Session } from "./session.ts";
 * export async function replay(session: Session, socket: WebSocket) {
 *   const plan = await collectReplay(session, 41);
 *   if (plan.ok) for (const f of plan.frames) socket.send(f.json);
 * }
 * ```
 */
export async function collectReplay(session: Session, lastSeq: number): Promise<ReplayPlan> {
  if (lastSeq > session.seq) {
    return {
      ok: false,
      code: "resume_gap",
      message: `last_seq ${lastSeq} is ahead of the session (at ${session.seq})`,
    };
  }
  const frames: StoredFrame[] = [];
  let last = lastSeq;
  // Only what the session's sockets have been sent: a frame still waiting to be durable
  // (and what follows it) reaches a resumed socket once it is, never before.
  const upTo = () => session.sentSeq;
  while (last < upTo()) {
    const r = await session.store.framesAfter(session.id, last);
    if (session.closed) {
      return { ok: false, code: "not_found", message: "The session ended while resuming" };
    }
    if (!r.ok) {
      return {
        ok: false,
        code: "resume_gap",
        message: r.reason === "cleared"
          ? `The conversation was cleared (clear_memory) since frame ${lastSeq}: its frames up ` +
            `to ${r.clearedSeq} are gone`
          : r.reason === "trimmed"
          ? `Frames after ${lastSeq} are no longer kept (oldest kept: ${r.oldestSeq}); ` +
            "starting a new session"
          : `Frame ${r.missingSeq} was never stored (its server stopped before writing it, or ` +
            "the database was away); starting a new session",
      };
    }
    for (const f of r.frames) {
      if (f.seq === last + 1 && f.seq <= upTo()) {
        frames.push(f);
        last = f.seq;
      }
    }
    if (r.frames.length === 0) break;
  }
  if (last < upTo()) {
    return {
      ok: false,
      code: "resume_gap",
      message: "The replay log has a hole; starting a new session",
    };
  }
  return { ok: true, frames };
}
