/**
 * The HTTP side: one `Deno.serve` handler that answers health checks and the
 * notify route, refuses plain HTTP, and upgrades WebSockets — through the
 * upgrade steps (origin → capacity → auth → per-user limit) — into agent
 * sessions. The same code path runs under the Supabase edge runtime and plain
 * `deno run`.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import { createLogger, type Logger, type LogSink } from "../platform/log.ts";
import { createSupabaseVerifier, type Verifier } from "../platform/auth.ts";
import { UserLimits } from "../platform/limits.ts";
import { DailyBudget } from "../platform/budget.ts";
import { PostgresQuota } from "../store/quota.ts";
import { keepAliveUntil } from "../platform/edge_runtime.ts";
import { MemoryStore, type SessionStore } from "../store/store.ts";
import { PostgresStore } from "../store/postgres.ts";
import { SessionRegistry } from "../session/registry.ts";
import { CLOSE } from "../protocol/codes.ts";
import type { AgentDefinition } from "../agent/definition.ts";
import { type AgentRuntime, createRuntime } from "../agent/runtime.ts";
import { createOpenRouter, type ModelDeps } from "../model/openrouter.ts";
import { createTransport, fetchOver } from "../model/transport.ts";
import { createCpuBudget } from "../platform/cpu_budget.ts";
import { settlesWithin, sleep } from "../platform/backoff.ts";
import type { ModelBackend } from "../model/model.ts";
import {
  acceptSocket,
  authenticate,
  checkCapacity,
  checkOrigin,
  limitPerUser,
  release,
  runSteps,
  type Upgrade,
  type UpgradeStep,
} from "./upgrade.ts";
import { notifyRoute } from "./notify.ts";
import { json } from "./respond.ts";
import { closeQuietly } from "../session/socket.ts";
import { pageResponse } from "./page.ts";

/** The version reported by the health route. */
export const VERSION = "1.1.0";

/** How often a draining server looks whether its answers have ended. */
const DRAIN_POLL_MS = 50;

/** How long shutdown waits for clients to acknowledge their close frames. */
const CLOSE_GRACE_MS = 2000;

/**
 * How long shutdown waits for the sessions it let go of to be written as let
 * go and announced (a write and a NOTIFY each) before it closes the store.
 */
const END_GRACE_MS = 5000;

/** Optional replacements for the default collaborators. */
export interface AppOptions {
  /** Your agent (see agent/definition.ts); default: the stock agent, configured by env. */
  agent?: AgentDefinition;
  /** Where log lines go (default: stdout). Secrets are redacted before they get here. */
  logSink?: LogSink;
  /** The session store (serveAgent passes the one `openStore` chose); default: from config. */
  store?: SessionStore;
  /** This process's id on the bus; must be the one the store was opened with. */
  instance?: string;
  verifier?: Verifier;
}

/**
 * The logger of a server: JSON lines, with every secret the configuration
 * holds redacted.
 *
 * @example
 * ```ts
 * import { serverLogger } from "./app.ts";
 * import { loadConfig } from "../platform/config.ts";
 * const r = loadConfig({});
 * if (r.ok) serverLogger(r.config).info("hello");
 * ```
 */
export function serverLogger(config: Config, sink?: LogSink): Logger {
  return createLogger(
    config.logLevel,
    [
      config.apiKey,
      config.notifySecret ?? undefined,
      config.auth?.jwtSecret,
      config.store.url ?? undefined,
    ],
    sink,
  );
}

/** A request handler plus the state behind it. */
export interface App {
  /** Answers one request; `info` (from `Deno.serve`) gives the client's address. */
  fetch(req: Request, info?: Deno.ServeHandlerInfo): Promise<Response>;
  runtime: AgentRuntime;
  sessions: SessionRegistry;
  log: Logger;
  /**
   * Stops the sweeper, closes every socket with `shutdown` + 1012, and
   * resolves once they are closed (or after a short grace period).
   */
  close(reason?: string): Promise<void>;
  /**
   * Takes no new work and lets the answers in flight end (each session is
   * handed over as its answer ends), for at most `graceMs`.
   */
  drain(reason: string, graceMs: number): Promise<void>;
}

function resolveModel(agent: AgentDefinition, deps: ModelDeps): ModelBackend {
  const m = agent.model;
  if (m === undefined) return createOpenRouter(deps.config, deps.log, { fetch: deps.fetch });
  return typeof m === "function" ? m(deps) : m;
}

/**
 * Builds the request handler without listening, so it can be mounted on any
 * `Deno.serve` (or called directly).
 *
 * @example
 * ```ts ignore
 * const app = createApp(config, { agent: { system: "You are terse." } });
 * Deno.serve({ port: 8000 }, app.fetch);
 * ```
 */
export function createApp(config: Config, opts: AppOptions = {}): App {
  const log = serverLogger(config, opts.logSink);
  const instance = opts.instance ?? crypto.randomUUID();
  const storeLimits = {
    maxHistory: config.maxHistory,
    maxHistoryChars: config.maxHistoryChars,
    replayMaxFrames: config.replayMaxFrames,
    replayMaxBytes: config.replayMaxBytes,
    memoryMaxMessages: config.memoryMaxMessages,
  };
  // A holder is taken for dead after three missed sweeps (it renews once per sweep).
  const leaseMs = Math.max(1000, 3 * config.sweepIntervalMs);
  // Without a store given, only an explicit SESSION_STORE=postgres is durable here: `auto`
  // needs the schema check of openStore, which serveAgent runs before it builds the app.
  const { store: storeConfig } = config;
  const store: SessionStore = opts.store ??
    (storeConfig.mode === "postgres" && storeConfig.url
      ? new PostgresStore({
        url: storeConfig.url,
        poolSize: storeConfig.poolSize,
        flushMs: storeConfig.flushMs,
        buffer: { maxFrames: storeConfig.bufferMaxFrames, maxBytes: storeConfig.bufferMaxBytes },
        limits: storeLimits,
        instance,
        leaseMs,
        expiryMs: config.resumeWindowMs + leaseMs,
        conversationRetentionMs: storeConfig.conversationRetentionMs,
        log,
      })
      : new MemoryStore(storeLimits));
  const sessions = new SessionRegistry();
  const limits = new UserLimits({
    perUser: config.maxConnectionsPerUser,
    perMinute: config.rateLimitPerMinute,
    burst: config.rateLimitBurst,
    sessionsPerUser: config.maxSessionsPerUser,
  });
  const budget = config.userDailyTokenBudget !== null || config.userDailyCostBudget !== null
    ? new DailyBudget({ tokens: config.userDailyTokenBudget, cost: config.userDailyCostBudget })
    : null;
  // With a durable store the per-user limits hold across processes, synced about every second.
  const quota = store instanceof PostgresStore
    ? new PostgresQuota({
      sql: store.sql,
      limits,
      budget,
      intervalMs: Math.min(1000, config.sweepIntervalMs),
      log,
    })
    : null;
  const verifier = opts.verifier ?? (config.auth ? createSupabaseVerifier(config.auth) : null);
  const agent = opts.agent ?? {};
  // How the model's stream is read (UPSTREAM_TRANSPORT): one pool for the process.
  const transport = createTransport(config.upstreamTransport);
  const runtime = createRuntime({
    config,
    log,
    store,
    bus: store.bus,
    sessions,
    limits,
    budget,
    quota,
    instance,
    agent,
    model: resolveModel(agent, { config, log, fetch: fetchOver(transport) }),
  });
  const stopSweeper = runtime.startSweeper();
  // On hosted Supabase an isolate has about 2 s of CPU in all: past the soft budget it
  // hands its sessions over between answers, before the platform cuts one mid-stream.
  const cpu = createCpuBudget({
    softMs: config.cpuBudgetSoftMs,
    fromNow: true,
    onExceeded: (usedMs) => {
      log.warn("cpu_budget_exceeded", {
        used_ms: Math.round(usedMs),
        soft_ms: config.cpuBudgetSoftMs,
      });
      runtime.drain("cpu_budget");
    },
  });
  const startedAt = performance.now();
  const openSockets = new Set<Promise<void>>();
  const open = { count: 0 };
  const idle = config.heartbeatSeconds;
  const steps: UpgradeStep[] = [
    checkOrigin(config.allowedOrigins, log),
    checkCapacity(open, config.maxConnections, log),
  ];
  if (verifier) {
    steps.push(
      authenticate(verifier, idle, log),
      limitPerUser(limits, config.maxConnectionsPerUser, idle, log),
    );
  }
  const notify = notifyRoute(config.notifySecret, runtime);

  /** Wires an accepted socket to the runtime; every slot is given back when it ends. */
  function upgrade(u: Upgrade): Response {
    const { socket, response } = acceptSocket(u.req, idle);
    const conn = runtime.onConnect(socket, new URL(u.req.url), u.identity, u.address);
    // A connection reset before the client read the 101 never opens nor closes the
    // socket: after this long unopened it is given up, so its slots come back.
    let openTimer: ReturnType<typeof setTimeout> | undefined;
    const closed = new Promise<void>((resolve) => {
      socket.addEventListener("close", () => resolve(), { once: true });
      openTimer = setTimeout(() => {
        log.info("upgrade_never_opened", {});
        closeQuietly(socket, CLOSE.policy, "Never opened");
        resolve();
      }, config.handshakeTimeoutMs);
    });
    closed.then(() => clearTimeout(openTimer));
    closed.then(() => release(u));
    openSockets.add(closed);
    closed.then(() => openSockets.delete(closed));
    keepAliveUntil(closed);
    socket.addEventListener("open", () => {
      clearTimeout(openTimer);
      runtime.onOpen(conn).catch((err) => {
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
        runtime.onMessage(conn, e.data);
      } catch (err) {
        // The runtime answers bad input itself; this is the net for our own bugs.
        log.error("message_handler_crashed", { session: conn.session?.id, err: String(err) });
      }
    });
    socket.addEventListener("close", (e) => runtime.onClose(conn, e.code, e.reason));
    socket.addEventListener("error", (e) => runtime.onError(conn, e));
    return response;
  }

  return {
    async fetch(req, info) {
      const url = new URL(req.url);
      if (req.method === "POST" && url.pathname.endsWith("/notify")) {
        // One JSON log line and a JSON 500, never Deno's raw stack trace.
        return notify(req).catch((err) => {
          log.error("notify_failed", { err: String(err) });
          return json({ error: "internal_error" }, 500);
        });
      }
      if (req.method === "GET" && url.pathname.endsWith("/health")) {
        return json({
          status: "ok",
          version: VERSION,
          sessions: sessions.size,
          in_flight: sessions.inFlight,
          connections: open.count,
          store: { kind: store.durable ? "postgres" : "memory", ...store.health() },
          uptime_s: Math.round((performance.now() - startedAt) / 1000),
          simulator: config.simulator,
        });
      }
      if ((req.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
        return pageResponse(req, log) ??
          new Response("Expected WebSocket request", { status: 400 });
      }
      const addr = info?.remoteAddr as Deno.NetAddr | undefined;
      const u: Upgrade = { req, cleanups: [], address: addr?.hostname };
      try {
        const refused = await runSteps(steps, u);
        if (refused) return refused;
        return upgrade(u);
      } catch (err) {
        release(u);
        log.warn("upgrade_failed", { err: String(err) });
        return new Response("Invalid WebSocket upgrade request", { status: 400 });
      }
    },
    runtime,
    sessions,
    log,
    async close(reason = "server_stopping") {
      stopSweeper();
      cpu.stop();
      runtime.shutdown(reason);
      // Give close frames a moment to reach clients before listeners go away.
      await settlesWithin(Promise.all(openSockets), CLOSE_GRACE_MS);
      // A release not yet announced would leave its relays to find out by silence (seconds).
      if (!(await settlesWithin(runtime.ended(), END_GRACE_MS))) {
        log.warn("store_end_stuck", { waited_ms: END_GRACE_MS });
      }
      await quota?.close();
      await store.close().catch((err) => log.warn("store_close_failed", { err: String(err) }));
      transport.close();
    },

    async drain(reason, graceMs) {
      const until = performance.now() + graceMs;
      runtime.drain(reason);
      while (sessions.size > 0 && performance.now() < until) {
        await sleep(DRAIN_POLL_MS);
        runtime.drain(reason);
      }
      if (sessions.size > 0) log.warn("drain_grace_over", { sessions: sessions.size });
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
  /** Lets answers in flight end first (at most `graceMs`); see {@linkcode App.drain}. */
  drain(reason: string, graceMs: number): Promise<void>;
}

/**
 * Listens on `config.port` (0 picks a free port) and serves the app.
 *
 * @example
 * ```ts ignore
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
    drain: (reason, graceMs) => app.drain(reason, graceMs),
    async shutdown(reason) {
      await app.close(reason);
      // Deno's graceful shutdown waits for every connection, and one reset before its
      // 101 was read never finishes: stop waiting after a grace period.
      const done = await settlesWithin(server.shutdown(), CLOSE_GRACE_MS);
      if (!done) app.log.warn("shutdown_connections_stuck", { waited_ms: CLOSE_GRACE_MS });
    },
  };
}
