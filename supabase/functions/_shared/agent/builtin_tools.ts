/**
 * The tools that ship with the project, switched on by name in `TOOLS`
 * (a comma list). Each is an ordinary tool definition, written the way a
 * deployer writes theirs.
 *
 * @module
 */
import { z } from "zod";
import { tool, type ToolDefinition } from "./definition.ts";
import { AgentError } from "../protocol/errors.ts";
import { SearchMemoryArgs } from "./memory_commands.ts";

/** The current time, optionally in an IANA time zone. */
export const currentTime = tool({
  description: "The current date and time (ISO 8601), optionally in an IANA time zone such as " +
    "Europe/Berlin.",
  parameters: z.object({
    timezone: z.string().max(64).optional().describe("An IANA time zone, e.g. America/New_York"),
  }),
  execute: ({ timezone }) => {
    const now = new Date();
    if (!timezone) return { iso: now.toISOString(), timezone: "UTC" };
    let local: string;
    try {
      local = now.toLocaleString("sv-SE", { timeZone: timezone, hour12: false });
    } catch {
      throw new AgentError("invalid_message", `Unknown time zone: ${timezone}`);
    }
    return { iso: now.toISOString(), timezone, local: local.replace(" ", "T") };
  },
});

/**
 * Searches the user's past conversations (`ctx.memory`), so the model can
 * recall what was said before, in this conversation or another.
 */
export const searchMemory = tool({
  description: "Searches the user's past conversations with you (theirs only) for messages " +
    "holding any of the query's words; the best matches first, each with its conversation, " +
    "role, content and time. Use it when the user refers to something said before.",
  parameters: SearchMemoryArgs,
  execute: async ({ query, limit }, ctx) => ({ results: await ctx.memory.search(query, limit) }),
});

/** Every built-in tool, by the name `TOOLS` switches it on with. */
// deno-lint-ignore no-explicit-any
export const BUILTIN_TOOLS: Record<string, ToolDefinition<any>> = {
  current_time: currentTime,
  search_memory: searchMemory,
};

/**
 * The built-in tools named in `TOOLS`; throws on an unknown name so a typo
 * fails at start.
 *
 * @example
 * ```ts
 * import { builtinTools } from "./builtin_tools.ts";
 * Object.keys(builtinTools(["current_time"])); // ["current_time"]
 * ```
 */
// deno-lint-ignore no-explicit-any
export function builtinTools(names: string[]): Record<string, ToolDefinition<any>> {
  // deno-lint-ignore no-explicit-any
  const out: Record<string, ToolDefinition<any>> = {};
  for (const name of names) {
    const t = BUILTIN_TOOLS[name];
    if (!t) {
      throw new Error(`TOOLS: unknown tool "${name}"; built-in: ${Object.keys(BUILTIN_TOOLS)}`);
    }
    out[name] = t;
  }
  return out;
}
