/**
 * The Postgres client the durable store uses: postgres.js, with the sockets it
 * writes to opened here, so that a connection reset can never crash the process.
 *
 * postgres.js 3.4.9 (the latest release) has two ways to throw from a timer,
 * where no caller can catch it, when the database connection is cut:
 *
 * - `Cannot read properties of null (reading 'write')` at `connection.js`
 *   `nextWrite`: a query sent on a reserved connection (`sql.begin`'s
 *   `rollback` after the connection failed) schedules a write after the socket
 *   is gone (porsager/postgres#1154, #1208; unfixed upstream). The store never
 *   uses `begin` or `reserve`: each write is one statement, atomic on its own.
 * - `This socket has been ended by the other party` from Deno's `node:net`:
 *   a write after the server's FIN destroys the socket with an `error` event
 *   that fires after postgres.js removed its listeners. The sockets made here
 *   drop writes once ended or destroyed and always keep an `error` listener.
 *
 * postgres.js's `socket` option hands it a socket we made. It expects one that
 * is connected or connecting and must never see a rejected promise (the pool
 * would lose that connection), so a socket that cannot connect is returned
 * anyway and destroyed right after, which postgres.js handles as a closed
 * connection. TLS (`sslmode` in the URL) is negotiated here, before the socket
 * is handed over, because the TLS socket postgres.js would make is not ours
 * to guard.
 *
 * @module
 */
import net from "node:net";
import tls from "node:tls";
import postgres from "postgres";
import { fullJitterDelay, sleep } from "../platform/backoff.ts";

/** How the URL asks for TLS, as libpq's `sslmode` (postgres.js's default is `disable`). */
export type SslMode = "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full";

/** What {@linkcode createPgClient} needs besides the URL. */
export interface PgClientOptions {
  /** Connections in the pool (LISTEN takes one more). */
  max: number;
  /** How long opening a connection (TCP, TLS, startup) may take. */
  connectTimeoutMs: number;
  /** Told of every connection that closed before the server answered. */
  onConnectFailure?: (err: Error) => void;
}

/**
 * Reads `sslmode` (or postgres.js's `ssl`) from a connection URL.
 *
 * @example
 * ```ts
 * sslModeOf("postgres://u@db.example.com:5432/postgres?sslmode=require"); // "require"
 * ```
 */
export function sslModeOf(url: string): SslMode {
  let params: URLSearchParams;
  try {
    params = new URL(url).searchParams;
  } catch {
    return "disable";
  }
  const mode = params.get("sslmode") ?? params.get("ssl");
  if (params.get("sslrootcert") === "system") return "verify-full";
  switch (mode) {
    case "allow":
    case "prefer":
    case "require":
    case "verify-ca":
    case "verify-full":
      return mode;
    case "true":
      return "verify-full";
    default:
      return "disable";
  }
}

/**
 * Makes a socket safe to hand to postgres.js: writes after the end are
 * dropped (postgres.js learns of the end from `close`), and an `error`
 * listener stays attached even after postgres.js removes all of its own.
 * `onClose` is told whether the server ever answered.
 *
 * Nothing is emitted on the socket here: an `error` event that did not come
 * from the socket itself upsets Deno's node:net (an unhandled rejection).
 */
function guard(
  socket: net.Socket,
  host: string,
  port: number,
  onClose: (answered: boolean) => void,
  dead = false,
): net.Socket {
  const write = socket.write;
  const guarded = function (this: net.Socket, ...args: unknown[]): boolean {
    if (dead || socket.destroyed || socket.writableEnded) {
      const cb = args.findLast((a) => typeof a === "function") as
        | ((err: Error) => void)
        | undefined;
      if (cb) queueMicrotask(() => cb(new Error("write after the connection closed")));
      return false;
    }
    return (write as (...a: unknown[]) => boolean).apply(socket, args);
  };
  // node:net replaces `write` on the instance once the peer ends; keep ours.
  Object.defineProperty(socket, "write", { get: () => guarded, set: () => {}, configurable: true });
  const ignore = () => {};
  const closed = () => onClose(socket.bytesRead > 0);
  socket.on("error", ignore);
  socket.once("close", closed);
  const removeAll = socket.removeAllListeners;
  socket.removeAllListeners = function (this: net.Socket, ...args: unknown[]) {
    (removeAll as (...a: unknown[]) => net.Socket).apply(socket, args);
    if (args.length === 0 || args[0] === "error") socket.on("error", ignore);
    if (!socket.closed && (args.length === 0 || args[0] === "close")) socket.once("close", closed);
    return socket;
  } as typeof socket.removeAllListeners;
  // postgres.js reads these for its error messages.
  Object.assign(socket, { host, port });
  return socket;
}

/** A socket that reports `err` as a failed connection, the way postgres.js expects one. */
function failed(
  err: Error,
  host: string,
  port: number,
  onClose: (answered: boolean) => void,
): net.Socket {
  const socket = guard(new net.Socket(), host, port, onClose, true);
  // After postgres.js has attached its listeners (it does so right after we return).
  setTimeout(() => socket.destroy(err), 0);
  return socket;
}

/** The 8-byte SSLRequest message of the Postgres protocol. */
const SSL_REQUEST = new Uint8Array([0, 0, 0, 8, 4, 210, 22, 47]);

/** Opens TCP, asks the server for TLS, and upgrades; null when the server says no. */
async function openTls(
  host: string,
  port: number,
  mode: SslMode,
  timeoutMs: number,
): Promise<net.Socket | null> {
  const raw = net.connect(port, host);
  const timer = setTimeout(
    () => raw.destroy(new Error(`connect to ${host}:${port} timed out`)),
    timeoutMs,
  );
  try {
    await new Promise<void>((resolve, reject) => {
      raw.once("connect", resolve);
      raw.once("error", reject);
    });
    raw.write(SSL_REQUEST);
    const answer = await new Promise<number>((resolve, reject) => {
      raw.once("data", (b: Uint8Array) => resolve(b[0]));
      raw.once("error", reject);
      raw.once("close", () => reject(new Error("closed during the TLS request")));
    });
    raw.removeAllListeners();
    if (answer !== 83 /* S */) {
      raw.destroy();
      return null;
    }
    const verify = mode === "verify-ca" || mode === "verify-full";
    const secure = tls.connect({
      socket: raw,
      servername: net.isIP(host) ? undefined : host,
      rejectUnauthorized: verify,
    });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", resolve);
      secure.once("error", reject);
    });
    secure.removeAllListeners();
    return secure;
  } catch (err) {
    raw.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The `socket` option: a guarded socket to the host postgres.js asks for.
 *
 * While a query waits, postgres.js reconnects at once each time a connection
 * closes before it is established (a pooler or proxy whose database is down
 * accepts and closes), and the query waits on, so a database that refuses
 * connections would be hammered in a tight loop and nobody would hear of it.
 * Attempts after a failed one wait here first (full jitter, up to 2 s; a
 * server that answered resets the count), and each failure is reported.
 */
function socketFactory(
  mode: SslMode,
  timeoutMs: number,
  onConnectFailure: (err: Error) => void,
) {
  let failures = 0;
  const onClose = (answered: boolean) => {
    failures = answered ? 0 : failures + 1;
    // postgres.js keeps the query waiting through these; the store hears of them here.
    if (!answered) {
      onConnectFailure(new Error("the database closed the connection before answering"));
    }
  };
  return async (options: { host: string[]; port: number[] }): Promise<net.Socket> => {
    const host = options.host[0];
    const port = options.port[0];
    if (failures > 0) {
      await sleep(fullJitterDelay(failures - 1, 50, 2000));
    }
    if (mode === "disable") return guard(net.connect(port, host), host, port, onClose);
    try {
      const secure = await openTls(host, port, mode, timeoutMs);
      if (secure) return guard(secure, host, port, onClose);
      if (mode === "allow" || mode === "prefer") {
        return guard(net.connect(port, host), host, port, onClose);
      }
      return failed(
        new Error(`the server at ${host}:${port} does not offer TLS (sslmode=${mode})`),
        host,
        port,
        onClose,
      );
    } catch (err) {
      return failed(err instanceof Error ? err : new Error(String(err)), host, port, onClose);
    }
  };
}

/**
 * A postgres.js client whose connection resets surface as rejected queries,
 * never as an uncaught error.
 *
 * @example
 * ```ts
 * import { createPgClient } from "./pg_client.ts";
 * export const connect = (url: string) => createPgClient(url, { max: 3, connectTimeoutMs: 5000 });
 * ```
 */
export function createPgClient(url: string, opts: PgClientOptions): postgres.Sql {
  return postgres(url, {
    max: opts.max,
    idle_timeout: 30,
    connect_timeout: Math.max(1, Math.ceil(opts.connectTimeoutMs / 1000)),
    // Supabase's pooler in transaction mode does not support prepared statements.
    prepare: false,
    onnotice: () => {},
    // TLS, if any, is negotiated by the socket factory.
    ssl: false,
    socket: socketFactory(
      sslModeOf(url),
      opts.connectTimeoutMs,
      opts.onConnectFailure ?? (() => {}),
    ),
  } as postgres.Options<Record<string, never>>);
}

/** What kind of failure an error from the database is. */
export type PgFailure =
  /** The connection failed or the server is not accepting work now: retry later. */
  | "connection"
  /** The schema (or part of it) the store needs is not there: `supabase db push`. */
  | "schema"
  /** The rows sent were refused (bad text, constraint): retrying them will not help. */
  | "data";

/**
 * Classifies an error from postgres.js by its SQLSTATE (or connection code).
 *
 * @example
 * ```ts
 * classifyPgError({ code: "22021" }); // "data": invalid byte sequence (U+0000)
 * classifyPgError({ code: "42P01" }); // "schema": undefined table
 * ```
 */
export function classifyPgError(err: unknown): PgFailure {
  const code = String((err as { code?: unknown } | null)?.code ?? "");
  // 3F000 no schema, 42P01 no table, 42703 no column, 42883 no function.
  if (["3F000", "42P01", "42703", "42883"].includes(code)) return "schema";
  // Class 22 data exception (22021 bad UTF-8 / U+0000, 22P05 \u0000 in jsonb, 22P02 bad
  // input), class 23 integrity (a session deleted under its frames), 54 limits (row too big).
  if (/^(22|23|54)[0-9A-Z]{3}$/.test(code)) return "data";
  return "connection";
}

/**
 * A short, loggable description of a database error, without the query or
 * its parameters (which may hold message text).
 *
 * @example
 * ```ts
 * import { describePgError } from "./pg_client.ts";
 * const err = Object.assign(new Error('relation "agent_websocket.frames" does not exist'), {
 *   code: "42P01",
 * });
 * describePgError(err); // "42P01 relation \"agent_websocket.frames\" does not exist"
 * ```
 */
export function describePgError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return code ? `${code} ${err.message}` : err.message;
  }
  return String(err);
}
