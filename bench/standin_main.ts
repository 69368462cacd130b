/**
 * The OpenRouter stand-in (`dev/openrouter_simulator.ts`) in its own process.
 * Every request gets the same answer: `BENCH_TOKENS` tokens, `BENCH_GAP_MS`
 * apart, so what a client sees beyond that is overhead. Requests whose user
 * message contains `probe` get a short answer (`BENCH_PROBE_TOKENS` tokens,
 * 1 ms apart): the TTFT probes only need the first token and should not hold
 * the probe client for long. Control commands: `open` (streams open now).
 *
 * @module
 */
import { startSimulator } from "../dev/openrouter_simulator.ts";
import { serveControl } from "./control.ts";

const int = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);

/** The fixed answer: `n` tokens of seven characters each. */
function benchTokens(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `token${i % 10} `);
}

const sim = startSimulator({ tokenDelayMs: int("BENCH_GAP_MS", 50) });
// A client-tool round trip: the model asks for `bench_tool` once, then answers like a probe.
sim.when("toolprobe", {
  kind: "stream",
  toolCalls: [{ name: "bench_tool", arguments: "{}", fragments: 1 }],
  gapMs: 1,
  toolCallsOnce: true,
});
sim.when("probe", {
  kind: "stream",
  tokens: benchTokens(int("BENCH_PROBE_TOKENS", 2)),
  gapMs: 1,
});
sim.when("", {
  kind: "stream",
  tokens: benchTokens(int("BENCH_TOKENS", 20)),
  gapMs: int("BENCH_GAP_MS", 50),
});

// The simulator records every request for tests; a benchmark must not grow.
Deno.unrefTimer(setInterval(() => sim.requests.length = 0, 1000));

await serveControl({
  ready: { url: sim.url },
  maxSeconds: int("BENCH_MAX_SECONDS", 1800),
  handlers: { open: () => sim.openStreams },
  onQuit: () => sim.close(),
});
