/**
 * One socket, before and after it finds its session: what the upgrade learnt
 * (user, token, address), what it asked for in its URL (a resume, a
 * conversation), and the few things done to it outside any session — a
 * refusal, a redirect, the close at its token's expiry.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import { CLOSE } from "../protocol/codes.ts";
import { AgentError, errorFrame } from "../protocol/errors.ts";
import type { Peer, Session } from "../session/session.ts";
import { parseLastSeq, parseResumeRequest, type ResumeRequest } from "../session/resume.ts";
import { parseConversation } from "../session/conversation.ts";
import { closeQuietly, sendSocketFrame, shutdownFrame } from "../session/socket.ts";
import type { AgentUser } from "./definition.ts";

/** One socket's view: the session it speaks for once that is known. */
export interface Connection {
  socket: WebSocket;
  /** This socket's id (`socket_id`): it names the socket within its session. */
  socketId: string;
  url: URL;
  /** The verified user; null when auth is off. */
  user: AgentUser | null;
  /** The user's access token, for a Supabase client acting as them. */
  token: string | null;
  /** The id sent upstream as OpenRouter's `user`. */
  upstreamUser?: string;
  /** Whom per-user bounds count this socket's session under (user id, else client address). */
  limitKey: string;
  /** Closes the socket when its access token expires. */
  expiry?: ReturnType<typeof setTimeout>;
  /** What `onConnect` stored; merged into the session's state. */
  state: Record<string, unknown>;
  /** The session held here that the socket is attached to, once it is. */
  session: Session | null;
  /** The socket as its session knows it, once attached here. */
  peer: Peer | null;
  /** The id of the session held elsewhere that this socket is relayed to, if it is. */
  relayed: string | null;
  /** A resume asked for (for a conversation: `last_seq` alone, `sessionId` empty). */
  resume: ResumeRequest | null;
  /** The conversation asked for (`?conversation=`), if any. */
  conversation: string | null;
  /** Why the resume or conversation parameters were refused, if they were. */
  badResume: string | null;
  badConversation: string | null;
  /** Frames received before the session was ready. */
  inbox: unknown[];
}

/** Who a socket belongs to, as the upgrade found out. */
export interface Identity {
  user: AgentUser;
  token: string;
  upstreamUser: string;
}

/**
 * A connection for a socket just upgraded, with what its URL asks for.
 *
 * @example
 * ```ts
 * import { newConnection } from "./connection.ts";
 * const ws = { readyState: 0 } as WebSocket;
 * const conn = newConnection(ws, new URL("ws://h/?conversation=trip&last_seq=12"));
 * [conn.conversation, conn.resume?.lastSeq]; // ["trip", 12]
 * ```
 */
export function newConnection(
  socket: WebSocket,
  url: URL,
  who?: Identity,
  address?: string,
): Connection {
  const conversation = parseConversation(url);
  // A conversation is named, not numbered: `last_seq` alone resumes it.
  const named = typeof conversation === "string";
  const seq = named ? parseLastSeq(url) : null;
  const parsed = named
    ? (seq === null ? null : typeof seq === "number" ? { sessionId: "", lastSeq: seq } : seq)
    : parseResumeRequest(url);
  return {
    socket,
    socketId: crypto.randomUUID().replaceAll("-", "").slice(0, 16),
    url,
    user: who?.user ?? null,
    token: who?.token ?? null,
    upstreamUser: who?.upstreamUser,
    limitKey: who ? who.user.id : `addr:${address ?? "unknown"}`,
    state: {},
    session: null,
    peer: null,
    relayed: null,
    resume: parsed && !("error" in parsed) ? parsed : null,
    conversation: named ? conversation : null,
    badResume: parsed && "error" in parsed ? parsed.error : null,
    badConversation: conversation !== null && !named ? conversation.error : null,
    inbox: [],
  };
}

/** The close code a refused socket gets, by the error it was refused with. */
function refusalClose(err: unknown): [number, string] {
  const code = err instanceof AgentError ? err.code : "internal_error";
  if (code === "unauthorized") return [CLOSE.unauthorized, "Unauthorized"];
  if (code === "too_many_connections") return [CLOSE.tooManyConnections, "Too many connections"];
  if (code === "internal_error") return [CLOSE.internal, "Internal error"];
  return [CLOSE.policy, "Refused"];
}

/**
 * Tells a socket why it was refused (one `error` frame outside any
 * sequence), and closes it with the code that error calls for.
 *
 * @example
 * ```ts ignore
 * refuse(conn, new AgentError("unauthorized", "Sign in first"), log); // close 4001
 * ```
 */
export function refuse(conn: Connection, err: unknown, log: Logger): void {
  if (!(err instanceof AgentError)) {
    log.error("on_connect_failed", { err: String(err).slice(0, 300) });
  } else log.info("connection_refused", { code: err.code });
  sendSocketFrame(conn.socket, errorFrame(err));
  closeQuietly(conn.socket, ...refusalClose(err));
}

/**
 * Sends a socket on to another process: this one is handing over
 * (`shutdown` + 1012; clients reconnect and land elsewhere).
 *
 * @example
 * ```ts ignore
 * if (draining) redirect(conn, "sigterm");
 * ```
 */
export function redirect(conn: Connection, reason: string): void {
  sendSocketFrame(conn.socket, shutdownFrame("This server is handing over; reconnect", reason));
  closeQuietly(conn.socket, CLOSE.restart, "Server restart");
}

/**
 * A socket lives as long as its access token (with the same leeway the
 * verification gives): then `token_expired` and close 4003, which tells the
 * SDK to fetch a fresh token and resume.
 *
 * @example
 * ```ts ignore
 * watchExpiry(conn, config, log);
 * socket.onclose = () => clearTimeout(conn.expiry);
 * ```
 */
export function watchExpiry(conn: Connection, config: Config, log: Logger): void {
  const at = conn.user?.expiresAt;
  if (at === undefined || conn.socket.readyState !== WebSocket.OPEN) return;
  const ms = Math.max(0, at + (config.auth?.leewaySeconds ?? 30) * 1000 - Date.now());
  conn.expiry = setTimeout(() => {
    log.info("token_expired", { session: conn.session?.id ?? conn.relayed });
    sendSocketFrame(conn.socket, {
      type: "error",
      code: "token_expired",
      message: "Your access token expired; reconnect with a fresh one to resume",
      retryable: true,
    });
    closeQuietly(conn.socket, CLOSE.tokenExpired, "Token expired");
  }, Math.min(ms, 2 ** 31 - 1));
  // Under plain Deno a pending expiry alone must not keep the process alive.
  if (typeof Deno.unrefTimer === "function") Deno.unrefTimer(conn.expiry);
}
