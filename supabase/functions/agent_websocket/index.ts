/**
 * The `agent_websocket` edge function. Wiring only: read the config, start
 * the server, and say goodbye to clients when the isolate or process ends.
 *
 * @module
 */
import { loadConfig } from "../_shared/platform/config.ts";
import { startServer } from "../_shared/http/app.ts";
import { isEdgeRuntime, onBeforeUnload } from "../_shared/platform/edge_runtime.ts";
import { installSignalHandlers, reportConfigErrors } from "../_shared/platform/lifecycle.ts";

const result = loadConfig(Deno.env.toObject(), { edgeRuntime: isEdgeRuntime() });
if (!result.ok) reportConfigErrors(result.errors);
else {
  const config = result.config;
  const server = startServer(config);
  const log = server.app.log;
  log.info("server_started", {
    url: server.url,
    model: config.model,
    upstream: config.baseUrl,
    edge_runtime: isEdgeRuntime(),
  });
  if (!config.apiKey) {
    log.warn("not_configured", {
      message: "OPENROUTER_API_KEY is not set: every query will get a not_configured error",
    });
  }
  if (!onBeforeUnload(() => server.app.close("isolate_retiring"))) {
    installSignalHandlers(server, log);
  }
}
