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
import {
  installRejectionGuard,
  installSignalHandlers,
  reportConfigErrors,
} from "../platform/lifecycle.ts";
import { type RunningServer, serverLogger, startServer } from "./app.ts";
import { type OpenedStore, openStore, StoreConfigError } from "../store/open.ts";
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
export async function serveAgent(agent: AgentDefinition = {}): Promise<RunningServer> {
  const dev = (globalThis as { [DEV_HOOK]?: DevHook })[DEV_HOOK];
  const edge = isEdgeRuntime();
  const result = loadConfig(dev ? dev.env() : Deno.env.toObject(), { edgeRuntime: edge });
  if (!result.ok) reportConfigErrors(result.errors);
  const config = dev ? dev.prepare(result.config) : result.config;
  // The store is chosen before the server starts: `auto` checks that the schema is there.
  const instance = crypto.randomUUID();
  let opened: OpenedStore;
  try {
    opened = await openStore(config, serverLogger(config), instance);
  } catch (err) {
    if (err instanceof StoreConfigError) reportConfigErrors([err.message]);
    throw err;
  }
  const server = startServer(config, { agent, store: opened.store, instance });
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
    store: opened.store.durable ? "postgres" : "memory",
    store_why: opened.why,
  });
  if (model.configured === false) {
    log.warn("not_configured", {
      message: "OPENROUTER_API_KEY is not set: every query will get a not_configured error",
    });
  }
  installRejectionGuard(log);
  if (!onBeforeUnload(() => server.app.close("isolate_retiring"))) {
    installSignalHandlers(server, log, config.drainGraceMs);
  }
  dev?.started(server);
  return server;
}
