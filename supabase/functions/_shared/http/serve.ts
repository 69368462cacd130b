/**
 * `serveAgent`: the one call a deployer's `index.ts` makes. It reads the
 * configuration from the environment, serves the agent, and says goodbye to
 * clients when the isolate or process ends. `deno task dev` runs the very
 * same file, with the offline simulator standing in for OpenRouter.
 *
 * @module
 */
import { type Config, loadConfig } from "../platform/config.ts";
import { isEdgeRuntime, onBeforeUnload } from "../platform/edge_runtime.ts";
import { installSignalHandlers, reportConfigErrors } from "../platform/lifecycle.ts";
import { type RunningServer, startServer } from "./app.ts";
import type { AgentDefinition } from "../agent/definition.ts";

/**
 * How `deno task dev` adjusts a configuration before the server starts (it
 * points the model at the offline simulator). Set on `globalThis` by
 * dev/dev.ts before it imports the deployer's file; absent in production.
 */
export const DEV_HOOK = Symbol.for("agent_websocket.dev");

/** What dev/dev.ts puts under {@linkcode DEV_HOOK}. */
export interface DevHook {
  env(): Record<string, string | undefined>;
  prepare(config: Config): Config;
  started(server: RunningServer): void;
}

/**
 * Serves an agent. With no argument it is the stock agent, configured by the
 * environment; each field of the definition replaces one default.
 *
 * @example
 * ```ts ignore
 * import { serveAgent } from "../_shared/mod.ts";
 * serveAgent({
 *   system: (ctx) => `You help ${ctx.user?.claims.email ?? "a guest"}.`,
 *   commands: { ping2: () => ({ content: "pong" }) },
 * });
 * ```
 */
export function serveAgent(agent: AgentDefinition = {}): RunningServer {
  const dev = (globalThis as { [DEV_HOOK]?: DevHook })[DEV_HOOK];
  const edge = isEdgeRuntime();
  const result = loadConfig(dev ? dev.env() : Deno.env.toObject(), { edgeRuntime: edge });
  if (!result.ok) reportConfigErrors(result.errors);
  const config = dev ? dev.prepare(result.config) : result.config;
  const server = startServer(config, { agent });
  const log = server.app.log;
  const model = server.app.runtime.model;
  log.info("server_started", {
    url: server.url,
    agent: agent.name ?? config.agentName,
    model: model.defaultModel,
    backend: model.name,
    upstream: config.baseUrl,
    edge_runtime: edge,
    simulator: config.simulator,
  });
  if (model.configured === false) {
    log.warn("not_configured", {
      message: "OPENROUTER_API_KEY is not set: every query will get a not_configured error",
    });
  }
  if (!onBeforeUnload(() => server.app.close("isolate_retiring"))) {
    installSignalHandlers(server, log);
  }
  dev?.started(server);
  return server;
}
