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
 * On SIGINT or SIGTERM: no new work, answers in flight may end (for at most
 * `drainMs`), then `shutdown` notification and close 1012 on every socket
 * (clients reconnect and resume), then exit.
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
  server: {
    shutdown(reason: string): Promise<void>;
    drain?(reason: string, graceMs: number): Promise<void>;
  },
  log: Logger,
  drainMs = 0,
): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) Deno.exit(1);
    stopping = true;
    log.info("server_stopping", { signal });
    // A planned stop lets the answers in flight end first (a second signal exits at once).
    if (drainMs > 0) await server.drain?.("server_stopping", drainMs);
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

/**
 * A promise rejected with nobody to handle it ends a Deno process. Our own
 * code handles its rejections where they happen; this catches what a library
 * leaves behind, logs it at error level and keeps serving. The one seen: a
 * database cut off for seconds, the store replacing the client that stopped
 * answering, and postgres.js destroying the old one rejects a query of its
 * own nobody awaits (`CONNECTION_DESTROYED`; the LISTEN it re-issues by
 * itself is the likely one). It ended the process in 1 run of 3 before.
 *
 * @example
 * ```ts
 * import { installRejectionGuard } from "./lifecycle.ts";
 * import { createLogger } from "./log.ts";
 * installRejectionGuard(createLogger("info"));
 * ```
 */
export function installRejectionGuard(log: Logger): void {
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    log.error("unhandled_rejection", { err: String(e.reason).slice(0, 300) });
  });
}
