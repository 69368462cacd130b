/**
 * `deno task dev`: the function's own server on PORT, loading `.env` when
 * present. With no OPENROUTER_API_KEY it starts the offline simulator on
 * loopback and points the server at it, and says so loudly.
 *
 * @module
 */
import { loadConfig } from "../supabase/functions/_shared/platform/config.ts";
import { createLogger } from "../supabase/functions/_shared/platform/log.ts";
import { startServer } from "../supabase/functions/_shared/http/app.ts";
import {
  installSignalHandlers,
  reportConfigErrors,
} from "../supabase/functions/_shared/platform/lifecycle.ts";
import { loadDotEnv } from "./dotenv.ts";
import { startSimulator } from "./openrouter_simulator.ts";

const env = { ...loadDotEnv(".env"), ...Deno.env.toObject() };
const result = loadConfig(env);
if (!result.ok) reportConfigErrors(result.errors);
let config = result.config;
const log = createLogger(config.logLevel, [config.apiKey]);

if (!config.apiKey) {
  const sim = startSimulator({ tokenDelayMs: 40 });
  config = { ...config, apiKey: "offline-simulator", baseUrl: sim.url, simulator: true };
  log.warn("offline_simulator", {
    message: "OPENROUTER_API_KEY is not set: answers come from the OFFLINE SIMULATOR, " +
      "not a model. Put a key in .env to use OpenRouter.",
    simulator: sim.url,
  });
}

const server = startServer(config);
const wsUrl = server.url.replace("http://", "ws://");
log.info("server_started", { url: wsUrl, model: config.model, simulator: config.simulator });
console.error(`\n  agent_websocket is listening on ${wsUrl}\n  try: npx -y wscat -c ${wsUrl}\n`);
installSignalHandlers(server, log);
