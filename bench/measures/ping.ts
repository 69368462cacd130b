/**
 * Ping/pong round trips per second: `clients` sockets, each with one ping in
 * flight at a time (a closed loop), for a fixed window after a warm-up. The
 * gateway answers `{"type":"ping"}` with a `pong` frame; the bare echo server
 * sends the same text back. Every reply a client gets is one round trip.
 *
 * @module
 */
import { Samples } from "../histogram.ts";
import { CpuMeter, MachineMeter } from "../proc.ts";
import { closeSockets, openSockets, sleep } from "../sockets.ts";
import type { Target } from "../target.ts";

/** What one ping run measured. */
export interface PingResult {
  target: string;
  clients: number;
  window_s: number;
  round_trips_per_s: number;
  latency_ms: ReturnType<Samples["summary"]>;
  /** Cores busy on average; `others` is every other process on the machine (noise). */
  cores: { target: number; bench_clients: number; others: number };
}

/** Runs `clients` closed ping loops against a target. */
export async function measurePing(
  target: Target,
  clients: number,
  durationMs: number,
  warmupMs = 500,
): Promise<PingResult> {
  const sockets = await openSockets(clients, (i) => target.socketUrl(3_000_000 + i), {
    firstFrame: target.greets,
  });
  const latency = new Samples();
  let counting = false;
  let stopped = false;
  let count = 0;
  const ping = '{"type":"ping","id":"p"}';
  try {
    sockets.forEach((ws) => {
      let sentAt = 0;
      ws.addEventListener("message", () => {
        const now = performance.now();
        if (counting) {
          count++;
          latency.add(now - sentAt);
        }
        if (stopped) return;
        sentAt = performance.now();
        ws.send(ping);
      });
      sentAt = performance.now();
      ws.send(ping);
    });
    await sleep(warmupMs);
    const meters = {
      target: new CpuMeter(target.pids),
      bench: new CpuMeter([Deno.pid]),
      machine: new MachineMeter(),
    };
    counting = true;
    const start = performance.now();
    await sleep(durationMs);
    counting = false;
    const windowS = (performance.now() - start) / 1000;
    stopped = true;
    if (count === 0) throw new Error(`${target.name}: no pong in ${durationMs} ms`);
    const targetCores = meters.target.read().cores;
    const benchCores = meters.bench.read().cores;
    return {
      target: target.name,
      clients,
      window_s: windowS,
      round_trips_per_s: count / windowS,
      latency_ms: latency.summary(),
      cores: {
        target: targetCores,
        bench_clients: benchCores,
        others: Math.max(0, meters.machine.cores() - targetCores - benchCores),
      },
    };
  } finally {
    stopped = true;
    await sleep(50);
    await closeSockets(sockets);
  }
}
