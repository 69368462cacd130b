/**
 * Configuration: every environment variable the function reads, parsed and
 * validated with zod in one place so that a bad deployment fails with one
 * message naming every invalid variable, instead of a crash at first use.
 *
 * @module
 */
import { z } from "zod";

/** Where OpenRouter's OpenAI-compatible API lives unless OPENROUTER_BASE_URL says otherwise. */
export const OPENROUTER_DEFAULT_BASE_URL = "https://openrouter.ai/api/v1";

const csv = z
  .string()
  .optional()
  .transform((v) => (v ?? "").split(",").map((s) => s.trim()).filter((s) => s.length > 0));

const number = (def: number, min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().min(min).max(max).default(def);

const integer = (def: number, min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().int().min(min).max(max).default(def);

/**
 * The environment schema. Names and defaults of the original seed are kept
 * (`MODEL`, `AGENT_NAME`, `SESSION_TIMEOUT` in minutes, `MAX_HISTORY`,
 * `TEMPERATURE`, `MAX_TOKENS`); everything else is documented in `.env.example`.
 */
export const EnvSchema = z.object({
  OPENROUTER_API_KEY: z.string().trim().optional().transform((v) => v || undefined),
  OPENROUTER_BASE_URL: z.url().default(OPENROUTER_DEFAULT_BASE_URL),
  MODEL: z.string().trim().min(1).default("openai/gpt-4-turbo"),
  FALLBACK_MODELS: csv,
  ALLOWED_MODELS: csv,
  AGENT_NAME: z.string().trim().min(1).max(100).default("agent_websocket"),
  SYSTEM_PROMPT: z.string().optional(),
  SESSION_TIMEOUT: number(30, 0.001),
  MAX_HISTORY: integer(50, 0, 10_000),
  MAX_HISTORY_CHARS: integer(200_000, 1_000),
  TEMPERATURE: number(0.7, 0, 2),
  MAX_TOKENS: integer(1500, 1),
  SWEEP_INTERVAL_SECONDS: number(15, 0.01),
  RESUME_WINDOW_SECONDS: number(120, 0),
  REPLAY_MAX_FRAMES: integer(5000, 10),
  REPLAY_MAX_BYTES: integer(1_048_576, 1024),
  HEARTBEAT_SECONDS: integer(30, 0, 3600),
  MAX_MESSAGE_BYTES: integer(65_536, 256),
  MAX_CONTENT_CHARS: integer(32_000, 1),
  MAX_QUEUE: integer(10, 0, 1000),
  RATE_LIMIT_PER_MINUTE: integer(60, 1),
  RATE_LIMIT_BURST: integer(10, 1),
  USER_DAILY_TOKEN_BUDGET: z.coerce.number().int().min(1).optional(),
  USER_DAILY_COST_BUDGET: z.coerce.number().positive().optional(),
  UPSTREAM_FIRST_TOKEN_TIMEOUT_SECONDS: number(60, 0.01),
  UPSTREAM_TOTAL_TIMEOUT_SECONDS: number(300, 0.01),
  UPSTREAM_RETRIES: integer(2, 0, 10),
  UPSTREAM_RETRY_BASE_MS: integer(500, 1),
  UPSTREAM_RETRY_MAX_MS: integer(8_000, 1),
  MAX_SSE_EVENT_BYTES: integer(1_048_576, 1024),
  UPSTREAM_TRANSPORT: z.enum(["auto", "fetch", "socket"]).default("auto"),
  CPU_BUDGET_SOFT_MS: z.union([z.literal("auto"), z.coerce.number().min(0)]).default("auto"),
  APP_URL: z.url().optional(),
  APP_TITLE: z.string().trim().min(1).max(200).optional(),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
  MAX_TOOL_ITERATIONS: integer(8, 1, 100),
  TOOL_TIMEOUT_SECONDS: number(30, 0.01),
  CLIENT_TOOL_TIMEOUT_SECONDS: number(120, 0.01),
  APPROVAL_TIMEOUT_SECONDS: number(300, 0.01),
  TOOLS: csv.pipe(z.array(z.enum(["current_time", "search_memory"]))),
  STREAM_REASONING: z.enum(["true", "false"]).default("true").transform((v) => v === "true"),
  MAX_CONNECTION_AGE_SECONDS: z
    .union([z.literal("auto"), z.coerce.number().min(0)])
    .default("auto"),
  PORT: integer(8000, 0, 65_535),
  AUTH_MODE: z.enum(["auto", "off", "supabase"]).default("auto"),
  SUPABASE_URL: z.url().optional(),
  SUPABASE_ANON_KEY: z.string().optional(),
  // Hosted Supabase refuses secret names starting with SUPABASE_, hence JWT_SECRET; the old
  // name still works where nothing refuses it (local `.env`, `deno task start`).
  JWT_SECRET: z.string().min(16).optional(),
  SUPABASE_JWT_SECRET: z.string().min(16).optional(),
  JWT_ISSUER: z.string().optional(),
  JWT_AUDIENCE: z.string().min(1).default("authenticated"),
  JWT_LEEWAY_SECONDS: integer(30, 0, 600),
  ALLOWED_ORIGINS: csv,
  MAX_CONNECTIONS: integer(1000, 1),
  MAX_CONNECTIONS_PER_USER: integer(5, 1),
  MAX_SESSIONS_PER_USER: integer(20, 1),
  MAX_SESSIONS: integer(10_000, 1),
  REPLAY_MEMORY_BYTES: integer(67_108_864, 65_536),
  HANDSHAKE_TIMEOUT_SECONDS: number(10, 0.05),
  DRAIN_GRACE_SECONDS: number(10, 0),
  MAX_ANSWER_CHARS: integer(200_000, 100),
  SLOW_CONSUMER_SECONDS: number(30, 0.05),
  HARD_MAX_MESSAGE_BYTES: integer(1_048_576, 1024),
  SEND_HIGH_WATER_BYTES: integer(262_144, 1024),
  SEND_HARD_LIMIT_BYTES: integer(4_194_304, 4096),
  SESSION_STORE: z.enum(["auto", "memory", "postgres"]).default("auto"),
  SUPABASE_DB_URL: z.string().optional(),
  DATABASE_URL: z.string().optional(),
  DB_POOL_SIZE: integer(3, 1, 50),
  FRAME_FLUSH_MS: integer(20, 1, 5000),
  STORE_BUFFER_MAX_FRAMES: integer(100_000, 100),
  STORE_BUFFER_MAX_BYTES: integer(16_777_216, 65_536),
  CONVERSATION_RETENTION_DAYS: number(30, 0.0001, 36_500),
  MEMORY_MAX_MESSAGES: integer(5000, 10, 1_000_000),
  NOTIFY_SECRET: z.string().min(16).optional(),
  SUPABASE_SERVICE_ROLE_KEY: z.string().optional(),
});

/** The parsed configuration the rest of the code reads. */
export interface Config {
  /** Undefined means "not configured": every query gets a `not_configured` error. */
  apiKey: string | undefined;
  baseUrl: string;
  model: string;
  fallbackModels: string[];
  /** Models a client may ask for per query; always contains `model`. */
  allowedModels: string[];
  agentName: string;
  systemPrompt: string;
  sessionTimeoutMs: number;
  maxHistory: number;
  maxHistoryChars: number;
  /** Messages one conversation keeps for search; past it the oldest said are dropped. */
  memoryMaxMessages: number;
  temperature: number;
  maxTokens: number;
  sweepIntervalMs: number;
  /** How long a session outlives its socket, waiting for a resume; 0 = not at all. */
  resumeWindowMs: number;
  replayMaxFrames: number;
  replayMaxBytes: number;
  /** Passed to `Deno.upgradeWebSocket` as `idleTimeout`; 0 turns protocol pings off. */
  heartbeatSeconds: number;
  maxMessageBytes: number;
  maxContentChars: number;
  maxQueue: number;
  rateLimitPerMinute: number;
  rateLimitBurst: number;
  /**
   * Tokens (prompt + completion, as the model reports them) one user may use per UTC day;
   * null: no bound. Without auth the "user" is the client address.
   */
  userDailyTokenBudget: number | null;
  /** The same in OpenRouter credits (the `cost` usage reports); null: no bound. */
  userDailyCostBudget: number | null;
  firstTokenTimeoutMs: number;
  totalTimeoutMs: number;
  retries: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Largest upstream SSE event (or line) read; past it the answer ends with `upstream_error`. */
  maxSseEventBytes: number;
  /** How the upstream is read: `socket` (Deno.connect), `fetch`, or `auto` (socket unless a proxy is set). */
  upstreamTransport: "auto" | "fetch" | "socket";
  /** Isolate CPU time after which no new work should be taken; 0 = not tracked. */
  cpuBudgetSoftMs: number;
  appUrl: string | undefined;
  appTitle: string | undefined;
  logLevel: "debug" | "info" | "warn" | "error";
  /** Most model calls one query may make (tools make more than one). */
  maxToolIterations: number;
  toolTimeoutMs: number;
  clientToolTimeoutMs: number;
  approvalTimeoutMs: number;
  /** Built-in tools switched on. */
  tools: string[];
  /** Whether `reasoning` frames (and the final `reasoning`) are sent. */
  streamReasoning: boolean;
  /** Where a client acting as the user reaches Supabase; null without URL and anon key. */
  supabase: { url: string; anonKey: string } | null;
  /** 0 means sockets are never closed for age. */
  maxConnectionAgeMs: number;
  port: number;
  /** Set by `deno task dev` when the offline simulator answers instead of OpenRouter. */
  simulator: boolean;
  /** Null when authentication is off. */
  auth: {
    supabaseUrl: string;
    apiKey: string;
    jwtSecret: string | undefined;
    issuer: string;
    audience: string;
    /** Clock skew tolerated on `exp` and `nbf`, for every algorithm. */
    leewaySeconds: number;
  } | null;
  /** Browser origins allowed to connect; empty allows every origin. */
  allowedOrigins: string[];
  maxConnections: number;
  maxConnectionsPerUser: number;
  /** Sessions per user (or client address without auth), attached or waiting for a resume. */
  maxSessionsPerUser: number;
  /** Sessions this process holds at most; past it the oldest waiting for a resume go. */
  maxSessions: number;
  /** Replay log bytes in this process's memory at most; past it the same. */
  replayMemoryBytes: number;
  /** How long an accepted upgrade may take to open before its slots are given back. */
  handshakeTimeoutMs: number;
  /** On SIGTERM / SIGINT, how long answers in flight may take to end before the goodbye. */
  drainGraceMs: number;
  /** An answer longer than this ends with `answer_too_large`. */
  maxAnswerChars: number;
  /** A client behind for this long without catching up gets `slow_consumer`. */
  slowConsumerMs: number;
  /** Frames over this close the socket with 1009 instead of getting an error frame. */
  hardMaxMessageBytes: number;
  /** Above this many queued bytes a socket's deltas are coalesced and upstream reading waits. */
  sendHighWaterBytes: number;
  /** Above this the query ends with `slow_consumer` and the socket is closed. */
  sendHardLimitBytes: number;
  /** Where sessions live; `openStore` (store/open.ts) decides from this. */
  store: StoreConfig;
  /** The bearer secret of the POST /notify route; null turns the route off. */
  notifySecret: string | null;
}

/** The session store settings. */
export interface StoreConfig {
  /**
   * `auto`: Postgres when a database URL is set and the schema is there,
   * memory otherwise. `postgres`: Postgres, refusing to start without the
   * schema. `memory`: this process's memory only.
   */
  mode: "auto" | "memory" | "postgres";
  /** SUPABASE_DB_URL, else DATABASE_URL; null when neither is set. */
  url: string | null;
  poolSize: number;
  flushMs: number;
  /** Frames that may wait for the database while it is away, before the oldest are dropped. */
  bufferMaxFrames: number;
  bufferMaxBytes: number;
  /** How long a named conversation is kept after its last activity (Postgres store). */
  conversationRetentionMs: number;
}

/** The result of {@linkcode loadConfig}: a config, or every problem at once. */
export type ConfigResult = { ok: true; config: Config } | { ok: false; errors: string[] };

/**
 * Hosted Supabase ends a socket at its wall clock (150 s on the free plan).
 * Closing ten seconds earlier lets us say goodbye (`shutdown` + 1012) first.
 */
const EDGE_RUNTIME_CONNECTION_AGE_S = 140;

/**
 * Hosted Supabase gives an isolate about 2 s of CPU time. Stopping new work
 * at 1.5 s leaves the rest for answers already streaming.
 */
const EDGE_RUNTIME_CPU_BUDGET_SOFT_MS = 1500;

/**
 * Parses the environment into a {@linkcode Config}.
 *
 * @example
 * ```ts
 * const result = loadConfig(Deno.env.toObject());
 * if (!result.ok) throw new Error(result.errors.join("\n"));
 * console.log(result.config.model);
 * ```
 */
export function loadConfig(
  env: Record<string, string | undefined>,
  opts: { edgeRuntime?: boolean } = {},
): ConfigResult {
  // Empty strings come from `.env` lines like `MODEL=`; treat them as unset.
  const cleaned = Object.fromEntries(
    Object.entries(env).filter(([, v]) => v !== undefined && v !== ""),
  );
  const parsed = EnvSchema.safeParse(cleaned);
  if (!parsed.success) {
    return {
      ok: false,
      errors: parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`),
    };
  }
  const e = parsed.data;
  const authOn = e.AUTH_MODE === "supabase" || (e.AUTH_MODE === "auto" && !!opts.edgeRuntime);
  const dbUrl = e.SUPABASE_DB_URL ?? e.DATABASE_URL;
  if (e.SESSION_STORE === "postgres" && !dbUrl) {
    return {
      ok: false,
      errors: ["SUPABASE_DB_URL: required when SESSION_STORE is postgres (or set DATABASE_URL)"],
    };
  }
  if (authOn && !e.SUPABASE_URL) {
    return {
      ok: false,
      errors: ["SUPABASE_URL: required when AUTH_MODE is supabase (set automatically on Supabase)"],
    };
  }
  const allowed = e.ALLOWED_MODELS.length > 0 ? e.ALLOWED_MODELS : [e.MODEL, ...e.FALLBACK_MODELS];
  const age = e.MAX_CONNECTION_AGE_SECONDS === "auto"
    ? (opts.edgeRuntime ? EDGE_RUNTIME_CONNECTION_AGE_S : 0)
    : e.MAX_CONNECTION_AGE_SECONDS;
  return {
    ok: true,
    config: {
      apiKey: e.OPENROUTER_API_KEY,
      baseUrl: e.OPENROUTER_BASE_URL.replace(/\/+$/, ""),
      model: e.MODEL,
      fallbackModels: e.FALLBACK_MODELS,
      allowedModels: [...new Set([e.MODEL, ...allowed])],
      agentName: e.AGENT_NAME,
      systemPrompt: e.SYSTEM_PROMPT ??
        `You are ${e.AGENT_NAME}, a helpful assistant. Answer clearly and concisely.`,
      sessionTimeoutMs: e.SESSION_TIMEOUT * 60_000,
      maxHistory: e.MAX_HISTORY,
      maxHistoryChars: e.MAX_HISTORY_CHARS,
      memoryMaxMessages: e.MEMORY_MAX_MESSAGES,
      temperature: e.TEMPERATURE,
      maxTokens: e.MAX_TOKENS,
      sweepIntervalMs: e.SWEEP_INTERVAL_SECONDS * 1000,
      resumeWindowMs: e.RESUME_WINDOW_SECONDS * 1000,
      replayMaxFrames: e.REPLAY_MAX_FRAMES,
      replayMaxBytes: e.REPLAY_MAX_BYTES,
      heartbeatSeconds: e.HEARTBEAT_SECONDS,
      maxMessageBytes: e.MAX_MESSAGE_BYTES,
      maxContentChars: e.MAX_CONTENT_CHARS,
      maxQueue: e.MAX_QUEUE,
      rateLimitPerMinute: e.RATE_LIMIT_PER_MINUTE,
      rateLimitBurst: e.RATE_LIMIT_BURST,
      userDailyTokenBudget: e.USER_DAILY_TOKEN_BUDGET ?? null,
      userDailyCostBudget: e.USER_DAILY_COST_BUDGET ?? null,
      firstTokenTimeoutMs: e.UPSTREAM_FIRST_TOKEN_TIMEOUT_SECONDS * 1000,
      totalTimeoutMs: e.UPSTREAM_TOTAL_TIMEOUT_SECONDS * 1000,
      retries: e.UPSTREAM_RETRIES,
      retryBaseMs: e.UPSTREAM_RETRY_BASE_MS,
      retryMaxMs: e.UPSTREAM_RETRY_MAX_MS,
      maxSseEventBytes: e.MAX_SSE_EVENT_BYTES,
      upstreamTransport: e.UPSTREAM_TRANSPORT,
      cpuBudgetSoftMs: e.CPU_BUDGET_SOFT_MS === "auto"
        ? (opts.edgeRuntime ? EDGE_RUNTIME_CPU_BUDGET_SOFT_MS : 0)
        : e.CPU_BUDGET_SOFT_MS,
      appUrl: e.APP_URL,
      appTitle: e.APP_TITLE,
      logLevel: e.LOG_LEVEL,
      maxToolIterations: e.MAX_TOOL_ITERATIONS,
      toolTimeoutMs: e.TOOL_TIMEOUT_SECONDS * 1000,
      clientToolTimeoutMs: e.CLIENT_TOOL_TIMEOUT_SECONDS * 1000,
      approvalTimeoutMs: e.APPROVAL_TIMEOUT_SECONDS * 1000,
      tools: e.TOOLS,
      streamReasoning: e.STREAM_REASONING,
      supabase: e.SUPABASE_URL && e.SUPABASE_ANON_KEY
        ? { url: e.SUPABASE_URL.replace(/\/+$/, ""), anonKey: e.SUPABASE_ANON_KEY }
        : null,
      maxConnectionAgeMs: age * 1000,
      port: e.PORT,
      simulator: false,
      auth: authOn && e.SUPABASE_URL
        ? {
          supabaseUrl: e.SUPABASE_URL.replace(/\/+$/, ""),
          apiKey: e.SUPABASE_ANON_KEY ?? "public",
          jwtSecret: e.JWT_SECRET ?? e.SUPABASE_JWT_SECRET,
          issuer: e.JWT_ISSUER ?? `${e.SUPABASE_URL.replace(/\/+$/, "")}/auth/v1`,
          audience: e.JWT_AUDIENCE,
          leewaySeconds: e.JWT_LEEWAY_SECONDS,
        }
        : null,
      allowedOrigins: e.ALLOWED_ORIGINS,
      maxConnections: e.MAX_CONNECTIONS,
      maxConnectionsPerUser: e.MAX_CONNECTIONS_PER_USER,
      maxSessionsPerUser: e.MAX_SESSIONS_PER_USER,
      maxSessions: e.MAX_SESSIONS,
      replayMemoryBytes: e.REPLAY_MEMORY_BYTES,
      handshakeTimeoutMs: e.HANDSHAKE_TIMEOUT_SECONDS * 1000,
      drainGraceMs: e.DRAIN_GRACE_SECONDS * 1000,
      maxAnswerChars: e.MAX_ANSWER_CHARS,
      slowConsumerMs: e.SLOW_CONSUMER_SECONDS * 1000,
      hardMaxMessageBytes: Math.max(e.HARD_MAX_MESSAGE_BYTES, e.MAX_MESSAGE_BYTES),
      sendHighWaterBytes: e.SEND_HIGH_WATER_BYTES,
      sendHardLimitBytes: Math.max(e.SEND_HARD_LIMIT_BYTES, e.SEND_HIGH_WATER_BYTES),
      store: {
        mode: e.SESSION_STORE,
        url: dbUrl ?? null,
        poolSize: e.DB_POOL_SIZE,
        flushMs: e.FRAME_FLUSH_MS,
        bufferMaxFrames: e.STORE_BUFFER_MAX_FRAMES,
        bufferMaxBytes: e.STORE_BUFFER_MAX_BYTES,
        conversationRetentionMs: e.CONVERSATION_RETENTION_DAYS * 86_400_000,
      },
      notifySecret: e.NOTIFY_SECRET ?? e.SUPABASE_SERVICE_ROLE_KEY ?? null,
    },
  };
}
