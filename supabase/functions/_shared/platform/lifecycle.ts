/**
 * Process lifecycle for plain Deno: graceful shutdown on SIGINT/SIGTERM and
 * one clear message for an invalid configuration.
 *
 * @module
 */
import type { Logger } from "./log.ts";

/**
 * Prints every configuration problem at once and exits with status 1.
 *
 * @example
 * ```ts
 * import { reportConfigErrors } from "./lifecycle.ts";
 * import { loadConfig } from "./config.ts";
 * const r = loadConfig({ MODEL: "openai/gpt-4o-mini" });
 * if (!r.ok) reportConfigErrors(r.errors);
 * ```
 */
export function reportConfigErrors(errors: string[]): never {
  console.error(
    JSON.stringify({
      time: new Date().toISOString(),
      level: "error",
      event: "invalid_config",
      message: `Invalid configuration; fix these environment variables: ${errors.join("; ")}`,
      errors,
    }),
  );
  Deno.exit(1);
}

/**
 * On SIGINT or SIGTERM: `shutdown` notification and close 1012 on every
 * socket (clients reconnect), then exit.
 *
 * @example
 * ```ts
 * import { installSignalHandlers } from "./lifecycle.ts";
 * import { createLogger } from "./log.ts";
 * export const onSignals = (server: { shutdown(reason: string): Promise<void> }) =>
 *   installSignalHandlers(server, createLogger("info"));
 * ```
 */
export function installSignalHandlers(
  server: { shutdown(reason: string): Promise<void> },
  log: Logger,
): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) Deno.exit(1);
    stopping = true;
    log.info("server_stopping", { signal });
    await server.shutdown("server_stopping");
    Deno.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    try {
      Deno.addSignalListener(signal, () => stop(signal));
    } catch {
      // Not every platform has every signal (Windows has no SIGTERM).
    }
  }
}
