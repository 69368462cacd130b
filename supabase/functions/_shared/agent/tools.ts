/**
 * The tools of one agent: the deployer's server tools and the built-in ones
 * switched on by `TOOLS`, compiled once at start (their zod parameters
 * turned into JSON Schema by zod itself), plus the client tools a query
 * declares. {@linkcode ToolSet.forQuery} says, for one query, what the model
 * is offered and who runs each name.
 *
 * @module
 */
import { z } from "zod";
import type { ToolDefinition } from "./definition.ts";
import type { ModelTool } from "../model/model.ts";
import type { ClientToolDeclaration } from "../protocol/frames.ts";
import { AgentError } from "../protocol/errors.ts";

/** A server tool, ready to offer and run. */
export interface ServerTool {
  name: string;
  executor: "server";
  // deno-lint-ignore no-explicit-any
  def: ToolDefinition<any>;
  schema: Record<string, unknown>;
  needsApproval: boolean;
}

/** A client tool, declared with the query. */
export interface ClientTool {
  name: string;
  executor: "client";
  needsApproval: boolean;
}

/** Who runs a tool name, for one query. */
export type ResolvedTool = ServerTool | ClientTool;

/** What one query may call. */
export interface QueryTools {
  /** What the model is offered (empty: no `tools` field is sent). */
  offered: ModelTool[];
  get(name: string): ResolvedTool | undefined;
}

/** The JSON Schema of a zod schema, as model APIs take it. */
function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io: "input" }) as Record<
    string,
    unknown
  >;
  return rest;
}

/**
 * An agent's server tools.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { ToolSet } from "./tools.ts";
 * const tools = new ToolSet({
 *   add: {
 *     description: "Adds two numbers",
 *     parameters: z.object({ a: z.number(), b: z.number() }),
 *     execute: ({ a, b }: { a: number; b: number }) => a + b,
 *   },
 * });
 * tools.forQuery([]).offered[0].name; // "add"
 * ```
 */
export class ToolSet {
  readonly #server = new Map<string, ServerTool>();

  // deno-lint-ignore no-explicit-any
  constructor(defs: Record<string, ToolDefinition<any>>) {
    for (const [name, def] of Object.entries(defs)) {
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
        throw new Error(`Tool name "${name}" must be 1-64 letters, digits, _ or -`);
      }
      if (typeof def.execute !== "function" || !def.parameters) {
        throw new Error(`Tool "${name}" needs parameters (a zod schema) and execute()`);
      }
      this.#server.set(name, {
        name,
        executor: "server",
        def,
        schema: jsonSchema(def.parameters),
        needsApproval: def.needsApproval === true,
      });
    }
  }

  /** The server tools, for the `connected` notification. */
  describe(): { name: string; description: string; needs_approval: boolean }[] {
    return [...this.#server.values()].map((t) => ({
      name: t.name,
      description: t.def.description,
      needs_approval: t.needsApproval,
    }));
  }

  get size(): number {
    return this.#server.size;
  }

  /**
   * The tools of one query: the server's plus the client's declarations.
   * Throws `invalid_message` when a client tool's name is a server tool's.
   */
  forQuery(declared: ClientToolDeclaration[]): QueryTools {
    const client = new Map<string, ClientTool>();
    const offered: ModelTool[] = [];
    for (const t of this.#server.values()) {
      offered.push({ name: t.name, description: t.def.description, parameters: t.schema });
    }
    for (const [i, d] of declared.entries()) {
      if (this.#server.has(d.name) || client.has(d.name)) {
        throw new AgentError("invalid_message", `Tool name "${d.name}" is already taken`, {
          issues: [{
            path: `tools.${i}.name`,
            message: "Names must be unique and not a server tool's",
          }],
        });
      }
      client.set(d.name, { name: d.name, executor: "client", needsApproval: !!d.needs_approval });
      offered.push({
        name: d.name,
        description: d.description ?? "",
        parameters: d.parameters ?? { type: "object", properties: {} },
      });
    }
    return { offered, get: (name) => this.#server.get(name) ?? client.get(name) };
  }
}
