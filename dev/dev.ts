/**
 * `deno task dev`: runs the deployer's own `agent_websocket/index.ts`, loading
 * `.env` when present. With no OPENROUTER_API_KEY it starts the offline
 * simulator on loopback, points the agent at it, and says so loudly.
 *
 * @module
 */
import { DEV_HOOK, type DevHook } from "../supabase/functions/_shared/http/serve.ts";
import { createLogger } from "../supabase/functions/_shared/platform/log.ts";
import { loadDotEnv } from "./dotenv.ts";
import { startSimulator } from "./openrouter_simulator.ts";

const hook: DevHook = {
  env: () => ({ ...loadDotEnv(".env"), ...Deno.env.toObject() }),
  prepare(config) {
    if (config.apiKey) return config;
    const sim = startSimulator({ tokenDelayMs: 40 });
    createLogger(config.logLevel).warn("offline_simulator", {
      message: "OPENROUTER_API_KEY is not set: answers come from the OFFLINE SIMULATOR, " +
        "not a model. Put a key in .env to use OpenRouter.",
      simulator: sim.url,
    });
    return { ...config, apiKey: "offline-simulator", baseUrl: sim.url, simulator: true };
  },
  started(server) {
    const wsUrl = server.url.replace("http://", "ws://");
    console.error(
      `\n  agent_websocket is listening on ${wsUrl}\n  try: npx -y wscat -c ${wsUrl}\n`,
    );
  },
};
(globalThis as { [DEV_HOOK]?: DevHook })[DEV_HOOK] = hook;
await import("../supabase/functions/agent_websocket/index.ts");
