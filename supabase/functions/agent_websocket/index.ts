/**
 * The `agent_websocket` edge function: your agent, in this one file.
 *
 * With nothing passed, `serveAgent()` is the stock agent configured by the
 * environment (MODEL, SYSTEM_PROMPT, TOOLS, …; see .env.example). Give it a
 * definition to make it yours — a system prompt per user, your own tools and
 * commands, a hook on connect, a hook after every answer, another model
 * backend. docs/agents.md walks through each; for example:
 *
 * ```ts ignore
 * import { AgentError, openRouter, serveAgent, tool } from "../_shared/mod.ts";
 * import { z } from "zod";
 *
 * serveAgent({
 *   system: (ctx) => `You help ${ctx.user?.claims.email ?? "a guest"}. Be brief.`,
 *   model: openRouter({ model: "openai/gpt-4o-mini" }),
 *   tools: {
 *     get_order: tool({
 *       description: "Looks up one of the user's orders",
 *       parameters: z.object({ order_id: z.string() }),
 *       execute: async ({ order_id }, ctx) =>
 *         (await ctx.supabase!.from("orders").select("*").eq("id", order_id).single()).data,
 *     }),
 *   },
 *   commands: {
 *     summarize: (_args, ctx) => ({ content: `Session ${ctx.session.id}` }),
 *   },
 *   onConnect: (ctx) => {
 *     if (!ctx.user) throw new AgentError("unauthorized", "Sign in first");
 *   },
 *   onTurnEnd: (turn, ctx) => ctx.log.info("billed", { tokens: turn.usage?.total_tokens }),
 * });
 * ```
 *
 * @module
 */
import { serveAgent } from "../_shared/mod.ts";

serveAgent({});
