/**
 * Everything a deployer imports to write their agent, in one place.
 *
 * @example
 * ```ts ignore
 * import { AgentError, openRouter, serveAgent, tool } from "../_shared/mod.ts";
 * import { z } from "zod";
 *
 * serveAgent({
 *   system: (ctx) => `You help ${ctx.user?.claims.email ?? "a guest"}.`,
 *   model: openRouter({ model: "openai/gpt-4o-mini" }),
 *   tools: {
 *     add: tool({
 *       description: "Adds two numbers",
 *       parameters: z.object({ a: z.number(), b: z.number() }),
 *       execute: ({ a, b }) => a + b,
 *     }),
 *   },
 *   commands: {
 *     whoami: (_args, ctx) => ({ content: ctx.user?.id ?? "guest" }),
 *   },
 *   onConnect: (ctx) => {
 *     if (ctx.user?.claims.banned) throw new AgentError("refused", "This account is suspended");
 *   },
 * });
 * ```
 *
 * @module
 */
export { serveAgent } from "./http/serve.ts";
export {
  type AgentContext,
  type AgentDefinition,
  type AgentUser,
  type CommandContext,
  type CommandHandler,
  type CommandResult,
  type ConnectContext,
  defineAgent,
  tool,
  type ToolDefinition,
  type TurnContext,
  type TurnOutcome,
  type TurnParams,
  type TurnQuery,
} from "./agent/definition.ts";
export { AgentError, type AgentErrorOptions } from "./protocol/errors.ts";
export { CLOSE, ERROR_CODES, type ErrorCode } from "./protocol/codes.ts";
export { createOpenRouter, openRouter, type OpenRouterOptions } from "./model/openrouter.ts";
export type {
  ChatMessage,
  ModelBackend,
  ModelEvent,
  ModelRequest,
  ModelTool,
} from "./model/model.ts";
export { BUILTIN_TOOLS } from "./agent/builtin_tools.ts";
