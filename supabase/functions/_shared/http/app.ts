/**
 * Server wiring: one `Deno.serve` handler that answers health checks,
 * refuses plain HTTP, and upgrades WebSockets into agent sessions. The same
 * code path runs under the Supabase edge runtime and plain `deno run`.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import { createLogger, type Logger, type LogSink } from "../platform/log.ts";
import { MemoryStore, type SessionStore } from "../store/store.ts";
import { createUpstreamClient, type UpstreamClient } from "../model/openrouter.ts";
import { createTransport, fetchOver } from "../model/transport.ts";
import { SessionRegistry } from "../session/registry.ts";
import { type AgentHandler, CLOSE, createAgentHandler } from "../agent/handler.ts";
import { JsonObject, offeredSubprotocols, SUBPROTOCOL } from "../protocol/frames.ts";
import { closeQuietly, sendSocketFrame } from "../agent/context.ts";
import { keepAliveUntil } from "../platform/edge_runtime.ts";
import {
  type AuthUser,
  createSupabaseVerifier,
  tokenFromRequest,
  upstreamUserId,
  type Verifier,
} from "../platform/auth.ts";
import { UserLimits } from "../platform/limits.ts";
import { PostgresStore } from "../store/postgres.ts";
import { createPgBus } from "../store/bus.ts";
import { z } from "zod";

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
  verifier?: Verifier;
}

/** A request handler plus the state behind it. */
export interface App {
  fetch(req: Request): Promise<Response>;
  agent: AgentHandler;
  sessions: SessionRegistry;
  log: Logger;
  /**
   * Stops the sweeper, closes every socket with `shutdown` + 1012, and
   * resolves once they are closed (or after a short grace period).
   */
  close(reason?: string): Promise<void>;
}

/** The body of POST …/notify. */
const NotifyBody = z.object({
  session_id: z.string().min(1).max(128),
  event: z.string().min(1).max(64).default("message"),
  content: z.string().max(4000),
  data: JsonObject.optional()
    .refine((d) => d === undefined || JSON.stringify(d).length <= 3000, "data is too large"),
});

/** Compares secrets in time independent of where they differ. */
function timingSafeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
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
  const log = createLogger(
    config.logLevel,
    [config.apiKey, config.notifySecret ?? undefined, config.auth?.jwtSecret, config.postgres?.url],
    opts.logSink,
  );
  const instance = crypto.randomUUID();
  const storeLimits = {
    maxHistory: config.maxHistory,
    maxHistoryChars: config.maxHistoryChars,
    replayMaxFrames: config.replayMaxFrames,
    replayMaxBytes: config.replayMaxBytes,
  };
  // A holder is taken for dead after three missed sweeps (it renews once per sweep).
  const leaseMs = Math.max(1000, 3 * config.sweepIntervalMs);
  const store = opts.store ?? (config.postgres
    ? new PostgresStore({
      ...config.postgres,
      limits: storeLimits,
      instance,
      leaseMs,
      expiryMs: config.resumeWindowMs + leaseMs,
      log,
    })
    : new MemoryStore(storeLimits));
  const bus = store instanceof PostgresStore ? createPgBus(store.sql) : undefined;
  const transport = createTransport(config.upstreamTransport);
  const upstream = opts.upstream ?? createUpstreamClient(config, log, fetchOver(transport));
  const sessions = new SessionRegistry();
  const limits = new UserLimits({
    perUser: config.maxConnectionsPerUser,
    perMinute: config.rateLimitPerMinute,
    burst: config.rateLimitBurst,
  });
  const verifier = opts.verifier ?? (config.auth ? createSupabaseVerifier(config.auth) : null);
  const agent = createAgentHandler({
    config,
    log,
    store,
    upstream,
    sessions,
    limits,
    bus,
    instance,
  });
  const stopSweeper = agent.startSweeper();
  const startedAt = performance.now();
  const openSockets = new Set<Promise<void>>();

  function accept(req: Request) {
    // The token subprotocol is never selected: echoing it would put it in responses.
    return Deno.upgradeWebSocket(req, {
      protocol: offeredSubprotocols(req).includes(SUBPROTOCOL) ? SUBPROTOCOL : undefined,
      idleTimeout: config.heartbeatSeconds,
    });
  }

  /**
   * Refuses after the upgrade: browsers cannot read an HTTP status from a
   * failed handshake, but they can read a close code, and the SDK stops
   * retrying on 4001 / 4029. No session is created.
   */
  function refuse(req: Request, code: number, error: string, message: string): Response {
    const { socket, response } = accept(req);
    socket.addEventListener("open", () => {
      sendSocketFrame(socket, { type: "error", code: error, message, retryable: false });
      closeQuietly(
        socket,
        code,
        error === "unauthorized" ? "Unauthorized" : "Too many connections",
      );
    });
    return response;
  }

  /** POST …/notify: another function sends a notification to a session. */
  async function notify(req: Request): Promise<Response> {
    const secret = config.notifySecret;
    if (!secret) return json({ error: "The notify route is off: set NOTIFY_SECRET" }, 404);
    if (!timingSafeEqual(req.headers.get("authorization") ?? "", `Bearer ${secret}`)) {
      return json({ error: "unauthorized" }, 401);
    }
    let body: unknown;
    try {
      body = await req.json();
    } catch {
      return json({ error: "Body must be JSON" }, 400);
    }
    const parsed = NotifyBody.safeParse(body);
    if (!parsed.success) {
      return json({
        error: "invalid_body",
        issues: parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })),
      }, 400);
    }
    const { session_id, event, content, data } = parsed.data;
    const outcome = await agent.notify(session_id, { event, content, data });
    if (outcome === "not_found") return json({ error: "not_found" }, 404);
    return json({ delivered: outcome }, outcome === "delivered" ? 200 : 202);
  }

  function upgrade(req: Request, who?: { user: AuthUser; upstreamUser: string }): Response {
    const { socket, response } = accept(req);
    const conn = agent.onConnect(socket, new URL(req.url), who);
    if (who) {
      socket.addEventListener("close", () => limits.release(who.user.id), { once: true });
    }
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
    async fetch(req) {
      const url = new URL(req.url);
      if (req.method === "POST" && url.pathname.endsWith("/notify")) return notify(req);
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
      const origin = req.headers.get("origin");
      if (origin && config.allowedOrigins.length > 0 && !config.allowedOrigins.includes(origin)) {
        log.info("origin_refused", { origin: origin.slice(0, 200) });
        return new Response("Origin not allowed", { status: 403 });
      }
      if (openSockets.size >= config.maxConnections) {
        log.warn("connection_limit", { open: openSockets.size });
        return new Response("Too many connections", {
          status: 503,
          headers: { "retry-after": "5" },
        });
      }
      try {
        if (!verifier) return upgrade(req);
        const token = tokenFromRequest(req);
        const result = token
          ? await verifier.verify(token)
          : { ok: false as const, reason: "no_token" };
        if (!result.ok) {
          log.info("auth_refused", { reason: result.reason });
          return refuse(
            req,
            CLOSE.unauthorized,
            "unauthorized",
            "A valid Supabase access token is required",
          );
        }
        const upstreamUser = await upstreamUserId(result.user.id);
        if (!limits.acquire(result.user.id)) {
          log.info("user_connection_limit", { user: upstreamUser });
          return refuse(
            req,
            CLOSE.tooManyConnections,
            "too_many_connections",
            `At most ${config.maxConnectionsPerUser} connections per user`,
          );
        }
        try {
          return upgrade(req, { user: result.user, upstreamUser });
        } catch (err) {
          limits.release(result.user.id);
          throw err;
        }
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
      await store.close().catch((err) => log.warn("store_close_failed", { err: String(err) }));
      transport.close();
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
