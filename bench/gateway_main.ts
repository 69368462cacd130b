/**
 * The gateway under test, in its own process so that its CPU time and memory
 * are its own. Configured from the environment exactly as the edge function
 * is (`loadConfig`), listening on 127.0.0.1 (PORT=0 picks a free port); log
 * lines go to stderr. Control commands (see `control.ts`):
 *
 * - `mem`: `Deno.memoryUsage()` after a full GC;
 * - `sessions`: how many sessions the registry holds;
 * - `sweep {passes}`: times `SessionRegistry.sweep` over the live sessions,
 *   with a policy under which nothing expires (every branch is evaluated for
 *   every session) and with the configured policy.
 *
 * Run: `deno run -A --v8-flags=--expose-gc bench/gateway_main.ts` (the bench does).
 *
 * @module
 */
import { loadConfig } from "../supabase/functions/_shared/platform/config.ts";
import { startServer } from "../supabase/functions/_shared/http/app.ts";
import type { SweepPolicy } from "../supabase/functions/_shared/session/registry.ts";
import { Samples } from "./histogram.ts";
import { serveControl } from "./control.ts";

const result = loadConfig(Deno.env.toObject());
if (!result.ok) {
  console.error(`gateway_main: bad configuration:\n${result.errors.join("\n")}`);
  Deno.exit(2);
}
const config = result.config;
const errorSink = new TextEncoder();
const server = startServer(config, {
  hostname: "127.0.0.1",
  logSink: (line) => Deno.stderr.writeSync(errorSink.encode(line + "\n")),
});

function timeSweeps(policy: SweepPolicy, passes: number) {
  const samples = new Samples();
  let expired = 0;
  for (let i = 0; i < passes; i++) {
    const t0 = performance.now();
    expired += server.app.sessions.sweep(policy, () => {});
    samples.add(performance.now() - t0);
  }
  return { ...samples.summary(), expired };
}

await serveControl({
  ready: { port: server.port },
  maxSeconds: Number(Deno.env.get("BENCH_MAX_SECONDS") ?? "1800"),
  handlers: {
    sessions: () => server.app.sessions.size,
    sweep: (args) => {
      const passes = Number(args.passes ?? 50);
      const never = 1e12;
      return {
        sessions: server.app.sessions.size,
        // Nothing expires, and every session is checked against all three limits.
        no_expiry: timeSweeps(
          { idleMs: never, resumeWindowMs: never, maxConnectionAgeMs: never, intervalMs: 1000 },
          passes,
        ),
        configured: timeSweeps({
          idleMs: config.sessionTimeoutMs,
          resumeWindowMs: config.resumeWindowMs,
          maxConnectionAgeMs: config.maxConnectionAgeMs,
          intervalMs: config.sweepIntervalMs,
        }, passes),
      };
    },
  },
  onQuit: () => server.shutdown("bench_done"),
});
