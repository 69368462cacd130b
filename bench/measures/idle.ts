/**
 * Memory per idle session: open sockets that then say nothing, and read the
 * server's memory before and after. The server is fresh (nothing else ran in
 * it), warmed up with a few sockets opened and closed, and its heap is read
 * after a full GC; RSS is the whole process. Sizes are cumulative: the 10k
 * reading adds 9k sockets to the 1k ones.
 *
 * @module
 */
import { closeSockets, openSockets, sleep } from "../sockets.ts";
import type { Target } from "../target.ts";

/** One memory reading of a server, in bytes; heap is null where it cannot be read (workerd). */
export interface MemoryReading {
  rss: number;
  heap: number | null;
}

/** One size. */
export interface IdleStep {
  sockets: number;
  rss_bytes: number;
  heap_bytes: number | null;
  rss_per_socket_bytes: number;
  heap_per_socket_bytes: number | null;
  /** Whatever the `atSize` hook returned (the gateway's sweeper timings). */
  extra?: unknown;
}

/** What the idle measure found. */
export interface IdleResult {
  target: string;
  baseline: MemoryReading;
  steps: IdleStep[];
}

/** Hooks for one target. */
export interface IdleHooks {
  memory(): Promise<MemoryReading>;
  /** How many sessions the server holds; checked against the sockets opened. */
  count?(): Promise<number>;
  /** Runs at each size, after the memory reading. */
  atSize?(sockets: number): Promise<unknown>;
}

/** Opens `sizes` sockets (ascending, cumulative) and reads memory at each. */
export async function measureIdle(
  target: Target,
  sizes: number[],
  hooks: IdleHooks,
  settleMs = 1000,
): Promise<IdleResult> {
  const warm = await openSockets(20, (i) => target.socketUrl(4_000_000 + i), {
    firstFrame: target.greets,
  });
  await closeSockets(warm);
  await sleep(settleMs);
  const baseline = await hooks.memory();
  const sockets: WebSocket[] = [];
  const steps: IdleStep[] = [];
  try {
    for (const size of [...sizes].sort((a, b) => a - b)) {
      const more = await openSockets(
        size - sockets.length,
        (i) => target.socketUrl(5_000_000 + sockets.length + i),
        {
          firstFrame: target.greets,
          concurrency: 100,
          timeoutMs: 60_000,
        },
      );
      sockets.push(...more);
      await sleep(settleMs);
      if (hooks.count) {
        const held = await hooks.count();
        if (held !== sockets.length) {
          throw new Error(`${target.name} holds ${held} sessions for ${sockets.length} sockets`);
        }
      }
      const m = await hooks.memory();
      steps.push({
        sockets: sockets.length,
        rss_bytes: m.rss,
        heap_bytes: m.heap,
        rss_per_socket_bytes: (m.rss - baseline.rss) / sockets.length,
        heap_per_socket_bytes: m.heap === null || baseline.heap === null
          ? null
          : (m.heap - baseline.heap) / sockets.length,
        extra: hooks.atSize ? await hooks.atSize(sockets.length) : undefined,
      });
    }
  } finally {
    await closeSockets(sockets, 30_000);
  }
  return { target: target.name, baseline, steps };
}
