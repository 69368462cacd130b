/**
 * Server wiring: one `Deno.serve` handler that answers health checks,
 * refuses plain HTTP, and upgrades WebSockets into agent sessions. The same
 * code path runs under the Supabase edge runtime and plain `deno run`.
 *
 * @module
 */
import type { Config } from "./config.ts";
import { createLogger, type Logger, type LogSink } from "./log.ts";
import { MemoryStore, type SessionStore } from "./store.ts";
import { createUpstreamClient, type UpstreamClient } from "./upstream.ts";
import { SessionRegistry } from "./sessions.ts";
import { type AgentHandler, CLOSE, createAgentHandler } from "./handler.ts";
import { SUBPROTOCOL } from "./protocol.ts";
import { keepAliveUntil } from "./edge_runtime.ts";

/** The version reported by the health route. */
export const VERSION = "1.0.0";

/** How long shutdown waits for clients to acknowledge their close frames. */
const CLOSE_GRACE_MS = 2000;

/** Optional replacements for the default collaborators. */
export interface AppOptions {
  /** Where log lines go (default: stdout). Secrets are redacted before they get here. */
  logSink?: LogSink;
  store?: SessionStore;
  upstream?: UpstreamClient;
}

/** A request handler plus the state behind it. */
export interface App {
  fetch(req: Request): Response;
  agent: AgentHandler;
  sessions: SessionRegistry;
  log: Logger;
  /**
   * Stops the sweeper, closes every socket with `shutdown` + 1012, and
   * resolves once they are closed (or after a short grace period).
   */
  close(reason?: string): Promise<void>;
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/**
 * Builds the request handler without listening, so it can be mounted on any
 * `Deno.serve` (or called directly).
 *
 * @example
 * ```ts
 * const app = createApp(config);
 * Deno.serve({ port: 8000 }, app.fetch);
 * ```
 */
export function createApp(config: Config, opts: AppOptions = {}): App {
  const log = createLogger(config.logLevel, [config.apiKey], opts.logSink);
  const store = opts.store ?? new MemoryStore({
    maxHistory: config.maxHistory,
    maxHistoryChars: config.maxHistoryChars,
    replayMaxFrames: config.replayMaxFrames,
    replayMaxBytes: config.replayMaxBytes,
  });
  const upstream = opts.upstream ?? createUpstreamClient(config, log);
  const sessions = new SessionRegistry();
  const agent = createAgentHandler({ config, log, store, upstream, sessions });
  const stopSweeper = agent.startSweeper();
  const startedAt = performance.now();
  const openSockets = new Set<Promise<void>>();

  function upgrade(req: Request): Response {
    const offered = (req.headers.get("sec-websocket-protocol") ?? "")
      .split(",")
      .map((p) => p.trim());
    const { socket, response } = Deno.upgradeWebSocket(req, {
      protocol: offered.includes(SUBPROTOCOL) ? SUBPROTOCOL : undefined,
      idleTimeout: config.heartbeatSeconds,
    });
    const conn = agent.onConnect(socket, new URL(req.url));
    const closed = new Promise<void>((resolve) =>
      socket.addEventListener("close", () => resolve())
    );
    openSockets.add(closed);
    closed.then(() => openSockets.delete(closed));
    keepAliveUntil(closed);
    socket.addEventListener("open", () => {
      agent.onOpen(conn).catch((err) => {
        log.error("open_failed", { err: String(err) });
        try {
          socket.close(CLOSE.internal, "Internal error");
        } catch {
          // Already closed.
        }
      });
    });
    socket.addEventListener("message", (e) => {
      try {
        agent.onMessage(conn, e.data);
      } catch (err) {
        // The handler answers bad input itself; this is the net for our own bugs.
        log.error("message_handler_crashed", { session: conn.session?.id, err: String(err) });
        conn.session?.emit({
          type: "error",
          code: "internal_error",
          message: "The server failed to handle that frame",
          retryable: true,
        });
      }
    });
    socket.addEventListener("close", (e) => agent.onClose(conn, e.code, e.reason));
    socket.addEventListener("error", (e) => agent.onError(conn, e));
    return response;
  }

  return {
    fetch(req) {
      const url = new URL(req.url);
      if (req.method === "GET" && url.pathname.endsWith("/health")) {
        return json({
          status: "ok",
          version: VERSION,
          sessions: sessions.size,
          in_flight: sessions.inFlight,
          uptime_s: Math.round((performance.now() - startedAt) / 1000),
          simulator: config.simulator,
        });
      }
      if ((req.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
        return new Response("Expected WebSocket request", { status: 400 });
      }
      try {
        return upgrade(req);
      } catch (err) {
        log.warn("upgrade_failed", { err: String(err) });
        return new Response("Invalid WebSocket upgrade request", { status: 400 });
      }
    },
    agent,
    sessions,
    log,
    async close(reason = "server_stopping") {
      stopSweeper();
      agent.shutdown(reason);
      // Give close frames a moment to reach clients before listeners go away.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all(openSockets),
        new Promise((resolve) => timer = setTimeout(resolve, CLOSE_GRACE_MS)),
      ]);
      clearTimeout(timer);
    },
  };
}

/** A listening server. */
export interface RunningServer {
  app: App;
  /** e.g. `http://127.0.0.1:54321` */
  url: string;
  port: number;
  /** Says goodbye to every client, then stops listening. */
  shutdown(reason?: string): Promise<void>;
}

/**
 * Listens on `config.port` (0 picks a free port) and serves the app.
 *
 * @example
 * ```ts
 * const server = startServer(config);
 * console.log(`listening on ${server.url}`);
 * await server.shutdown();
 * ```
 */
export function startServer(
  config: Config,
  opts: AppOptions & { hostname?: string } = {},
): RunningServer {
  const app = createApp(config, opts);
  const server = Deno.serve(
    { port: config.port, hostname: opts.hostname ?? "0.0.0.0", onListen: () => {} },
    app.fetch,
  );
  const addr = server.addr as Deno.NetAddr;
  const host = addr.hostname === "0.0.0.0" ? "127.0.0.1" : addr.hostname;
  return {
    app,
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    async shutdown(reason) {
      await app.close(reason);
      await server.shutdown();
    },
  };
}
