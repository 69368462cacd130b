/**
 * Your agent, in one object. Everything a deployer may change is a field of
 * {@linkcode AgentDefinition}, and every field has a default that keeps the
 * server working as configured by the environment — so `serveAgent({})` is
 * the stock agent, and each field you add replaces one default:
 *
 * | field        | default                                   | when it runs                    |
 * | ------------ | ----------------------------------------- | ------------------------------- |
 * | `name`       | env `AGENT_NAME`                          | shown in `connected`            |
 * | `system`     | env `SYSTEM_PROMPT`                       | before every model call         |
 * | `model`      | `openRouter()` from env                   | every model call                |
 * | `params`     | the query's `model`, env temperature/tokens | before every turn             |
 * | `tools`      | none (env `TOOLS` adds built-ins)         | when the model calls one        |
 * | `commands`   | none beyond `cancel/reset/history/stats`  | on a `command` frame            |
 * | `onConnect`  | accept everyone the auth step let in      | when a socket opens             |
 * | `onTurnEnd`  | nothing                                   | after every query's last frame  |
 *
 * Throw an `AgentError` from any of them to answer the client with a clear
 * error; anything else thrown is logged and answered as `internal_error`.
 *
 * @module
 */
import type { z } from "zod";
import type { SupabaseClient } from "@supabase/supabase-js";
import type { Logger } from "../platform/log.ts";
import type { ModelSetup } from "../model/openrouter.ts";
import type { ConversationSummary, MemoryHit, Usage } from "../protocol/wire.ts";
import type { ErrorCode } from "../protocol/codes.ts";

/** The verified user behind a socket. */
export interface AgentUser {
  /** The token's `sub`: the Supabase user id. */
  id: string;
  role?: string;
  /** Every claim of the access token (email, app_metadata, …). */
  claims: Record<string, unknown>;
  /** When the token expires (ms since the epoch); the socket is closed then (4003). */
  expiresAt?: number;
}

/** What every hook is told. */
export interface AgentContext {
  /** The verified user, or null when auth is off. */
  readonly user: AgentUser | null;
  /**
   * The session this socket speaks for: its id, and its name when it is a
   * named conversation (`?conversation=<name>`), else null.
   */
  readonly session: { readonly id: string; readonly conversation: string | null };
  /**
   * Your own per-session data: set it in `onConnect`, read it in every turn
   * and command. Kept in memory for the session's life (not in the store).
   */
  readonly state: Record<string, unknown>;
  readonly log: Logger;
  /**
   * A Supabase client acting as the user (their access token), so reads and
   * writes go through Row Level Security. Null when auth is off or
   * `SUPABASE_URL` / `SUPABASE_ANON_KEY` are not set.
   */
  readonly supabase: SupabaseClient | null;
  /** Sends a `notification` frame of your own to the session (it gets a `seq`, is replayed). */
  notify(event: string, content: string, data?: Record<string, unknown>): void;
  /** The user's conversations and what was said in them (theirs only). */
  readonly memory: AgentMemory;
}

/**
 * A user's memory: their named conversations, searchable. Scoped to the
 * session's user (with auth off, the one shared namespace); with the memory
 * store it lasts as long as the process, with Postgres for
 * `CONVERSATION_RETENTION_DAYS`.
 *
 * @example
 * ```ts ignore
 * const recall = tool({
 *   description: "What did we decide about the trip?",
 *   parameters: z.object({}),
 *   execute: async (_args, ctx) => (await ctx.memory.search("trip decided", 5)).map((h) => h.content),
 * });
 * ```
 */
export interface AgentMemory {
  /** Messages holding any of the query's words, best first (limit 1-50, default 10). */
  search(query: string, limit?: number): Promise<MemoryHit[]>;
  /** The user's conversations, the most recently active first (at most 100). */
  conversations(): Promise<ConversationSummary[]>;
}

/** What `onConnect` is told, before the session is known. */
export interface ConnectContext extends Omit<AgentContext, "session" | "memory"> {
  /** The URL the client connected to (its query parameters included). */
  readonly url: URL;
  /** Whether the client asks to resume a session. */
  readonly resuming: boolean;
}

/** The query a turn answers. */
export interface TurnQuery {
  readonly id: string;
  readonly content: string;
  /** The client's `metadata`, as sent (a JSON object), or `{}`. */
  readonly metadata: Record<string, unknown>;
  /** The model the client asked for (already checked against the allowed list), if any. */
  readonly model?: string;
}

/** What `system`, `params`, tools and `onTurnEnd` are told. */
export interface TurnContext extends AgentContext {
  readonly query: TurnQuery;
  /** Aborts when the query is cancelled, its session ends or a limit stops it. */
  readonly signal: AbortSignal;
}

/** Model parameters for one turn; unset fields keep their defaults. */
export interface TurnParams {
  model?: string;
  temperature?: number;
  maxTokens?: number;
  /** Passed to the provider as is (e.g. OpenRouter's `reasoning`, `provider`). */
  extra?: Record<string, unknown>;
}

/** How a turn ended, for `onTurnEnd`. */
export interface TurnOutcome {
  id: string;
  /** `"stop"`, `"length"`, `"cancelled"`, `"max_iterations"`, … or `"error"`. */
  finishReason: string;
  content: string;
  model: string;
  usage: Usage | null;
  timing: { first_token_ms: number | null; total_ms: number };
  iterations: number;
  toolCalls: number;
  /** Set when the turn ended with an error frame. */
  error: { code: ErrorCode; message: string } | null;
}

/** What a command answers: a `notification` (event defaults to the command's name). */
export interface CommandResult {
  event?: string;
  content?: string;
  [field: string]: unknown;
}

/** What a command handler is told. */
export interface CommandContext extends AgentContext {
  /** The command frame's `id`, echoed on the answer. */
  readonly commandId?: string;
}

/** A command of your own, answered like the built-in ones. */
export type CommandHandler = (
  args: Record<string, unknown>,
  ctx: CommandContext,
) => CommandResult | void | Promise<CommandResult | void>;

/** A tool the model may call, run on the server. */
export interface ToolDefinition<Args = Record<string, unknown>> {
  /** Tells the model when to use it. */
  description: string;
  /** The arguments, as a zod object; sent to the model as JSON Schema and checked before `execute`. */
  parameters: z.ZodType<Args>;
  /** Runs the tool; what it returns (any JSON) goes back to the model. */
  execute(args: Args, ctx: TurnContext & { toolCallId: string }): unknown | Promise<unknown>;
  /** Ask a human (`approval` frame) before running it. */
  needsApproval?: boolean;
  /** Overrides TOOL_TIMEOUT_SECONDS for this tool. */
  timeoutMs?: number;
}

/**
 * A tool, with its argument type inferred from the zod schema.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { tool } from "./definition.ts";
 * const add = tool({
 *   description: "Adds two numbers",
 *   parameters: z.object({ a: z.number(), b: z.number() }),
 *   execute: ({ a, b }) => a + b,
 * });
 * ```
 */
export function tool<Args>(def: ToolDefinition<Args>): ToolDefinition<Args> {
  return def;
}

/** Your agent. Every field is optional; see the module doc for the defaults. */
export interface AgentDefinition {
  /** Shown to clients as `agent` in `connected`. Default: env `AGENT_NAME`. */
  name?: string;
  /** The system prompt, fixed or per turn (from the user's claims, the query's metadata…). */
  system?: string | ((ctx: TurnContext) => string | Promise<string>);
  /** The model backend. Default: `openRouter()`, configured by the environment. */
  model?: ModelSetup;
  /** Model parameters per turn (e.g. a cheaper model or a token budget per plan). */
  params?: (ctx: TurnContext) => TurnParams | void | Promise<TurnParams | void>;
  /** Tools the model may call, by name. */
  // deno-lint-ignore no-explicit-any
  tools?: Record<string, ToolDefinition<any>>;
  /** Commands of your own, by name; listed in `unknown_command` next to the built-ins. */
  commands?: Record<string, CommandHandler>;
  /**
   * A socket opened. Throw an `AgentError` to refuse it (the client gets the
   * error, then the socket closes); write to `ctx.state` to keep data with
   * the session.
   */
  onConnect?: (ctx: ConnectContext) => void | Promise<void>;
  /** A query ended (answered, cancelled or failed): bill, log, store. Errors are logged. */
  onTurnEnd?: (turn: TurnOutcome, ctx: TurnContext) => void | Promise<void>;
}

/**
 * Checks a definition's names early, so a typo fails at start, not at the
 * first message.
 *
 * @example
 * ```ts
 * import { defineAgent } from "./definition.ts";
 * export default defineAgent({ system: "You are terse." });
 * ```
 */
export function defineAgent(def: AgentDefinition): AgentDefinition {
  return def;
}
