/**
 * Time to first token under load, relayed tokens per second, and server CPU
 * per relayed token, at one level of concurrent streams.
 *
 * `streams` background clients keep one answer each in flight through the
 * target. After a warm-up, two windows of `durationMs` follow under that load:
 *
 * 1. throughput: the target's CPU time (from /proc) over the window, divided
 *    by the tokens the background clients received in it;
 * 2. TTFT: one probe client asks short questions one at a time, alternating
 *    between the target and the stand-in directly over HTTP, so both kinds of
 *    probe see the same load; the difference of their percentiles is what the
 *    target adds. (Probes stay out of window 1: each costs a whole query.)
 *
 * @module
 */
import { Samples } from "../histogram.ts";
import { CpuMeter, MachineMeter, rssBytesOf } from "../proc.ts";
import { directProbe, WsProbe } from "../probes.ts";
import { sleep } from "../sockets.ts";
import { StreamLoad } from "../stream_load.ts";
import type { Target } from "../target.ts";

/** Inputs of one level. */
export interface StreamLevelOptions {
  target: Target;
  /** The stand-in's base URL and pid. */
  upstreamUrl: string;
  standinPid: number;
  streams: number;
  /** Length of the measured window. */
  durationMs: number;
  /** Probes per side at most (the window may end first). */
  maxProbes: number;
  /** Tokens per background answer and the gap between them. */
  tokens: number;
  gapMs: number;
  /** The target's heap in bytes, when it can tell (read after window 1). */
  heapBytes?: () => Promise<number>;
  /** The target's RSS and heap after a full GC, streams still open (read after window 2). */
  liveMemory?: () => Promise<{ rss: number; heapUsed: number }>;
}

type Summary = ReturnType<Samples["summary"]>;

/** What one level measured. */
export interface StreamLevelResult {
  target: string;
  streams: number;
  window_s: number;
  ttft_ms: { target: Summary; direct: Summary };
  /** Target percentile minus direct percentile. */
  added_ms: { p50: number; p99: number };
  tokens_per_s: number;
  /** What the stand-in would send at that many streams if nothing else took time. */
  stand_in_pace_tokens_per_s: number;
  /** NaN without background streams. */
  cpu_us_per_token: number;
  /** The same CPU time per answer completed in the window. */
  cpu_us_per_answer: number;
  /** The target's heap after window 1 (null when it cannot tell). */
  heap_bytes_after: number | null;
  /** The target's resident memory at the end of window 1, streams still open. */
  rss_bytes_streaming: number;
  /** After window 2, after a full GC, streams still open (null when it cannot tell). */
  live_after_gc: { rss_bytes: number; heap_bytes: number } | null;
  /** Cores busy on average over the window (1 = one core). */
  cores: {
    target: number;
    /** The part of the target's CPU time spent in the kernel. */
    target_system_share: number;
    stand_in: number;
    bench_clients: number;
    /** Every other process on the machine (noise: should be near 0). */
    others: number;
  };
  answers: number;
  errors: number;
  error_samples: string[];
}

const WARMUP_PROBES = 10;

/** Sleeps 1 to 5 ms, so probes do not fall into step with the stand-in's timers. */
const jitter = () => sleep(1 + Math.random() * 4);

/** Runs one level: load, warm-up, measured window, teardown. */
export async function measureStreamLevel(o: StreamLevelOptions): Promise<StreamLevelResult> {
  const answerMs = Math.max(1, (o.tokens - 1) * o.gapMs);
  const probe = await WsProbe.open(o.target, 1_000_000 + o.streams);
  const load = o.streams > 0 ? await StreamLoad.start(o.target, o.streams, answerMs) : null;
  try {
    for (let i = 0; i < WARMUP_PROBES; i++) {
      await probe.ask("probe warm-up");
      await directProbe(o.upstreamUrl, "probe warm-up");
    }
    // Window 1: throughput and CPU, background streams only (a probe costs a whole query).
    const meters = {
      target: new CpuMeter(o.target.pids),
      standIn: new CpuMeter([o.standinPid]),
      bench: new CpuMeter([Deno.pid]),
      machine: new MachineMeter(),
    };
    const deltas0 = load?.deltas ?? 0;
    const answers0 = load?.answers ?? 0;
    await sleep(o.durationMs);
    const cpu = meters.target.read();
    const rssStreaming = rssBytesOf(o.target.pids);
    const windowS = cpu.wallUs / 1e6;
    const relayed = (load?.deltas ?? 0) - deltas0;
    const answers = (load?.answers ?? 0) - answers0;
    const standIn = meters.standIn.read().cores;
    const bench = meters.bench.read().cores;
    const cores = {
      target: cpu.cores,
      target_system_share: cpu.cpuUs > 0 ? cpu.sysUs / cpu.cpuUs : 0,
      stand_in: standIn,
      bench_clients: bench,
      others: Math.max(0, meters.machine.cores() - cpu.cores - standIn - bench),
    };
    const heapAfter = o.heapBytes ? await o.heapBytes() : null;
    if (load && relayed === 0) {
      throw new Error(`${o.target.name}: no token relayed at ${o.streams} streams`);
    }

    // Window 2: TTFT probes, one at a time, alternating target and direct.
    const viaTarget = new Samples();
    const direct = new Samples();
    const end = performance.now() + o.durationMs;
    while (performance.now() < end && viaTarget.count < o.maxProbes) {
      viaTarget.add((await probe.ask(`probe ${viaTarget.count}`)).firstMs);
      await jitter();
      direct.add((await directProbe(o.upstreamUrl, `probe ${direct.count}`)).firstMs);
      await jitter();
    }
    const live = o.liveMemory ? await o.liveMemory() : null;
    if (viaTarget.count < 5) {
      throw new Error(`${o.target.name}: only ${viaTarget.count} probes in the window`);
    }
    return {
      target: o.target.name,
      streams: o.streams,
      window_s: windowS,
      ttft_ms: { target: viaTarget.summary(), direct: direct.summary() },
      added_ms: {
        p50: viaTarget.percentile(50) - direct.percentile(50),
        p99: viaTarget.percentile(99) - direct.percentile(99),
      },
      tokens_per_s: relayed / windowS,
      stand_in_pace_tokens_per_s: (o.streams * o.tokens * 1000) / answerMs,
      cpu_us_per_token: load ? cpu.cpuUs / relayed : NaN,
      cpu_us_per_answer: answers > 0 ? cpu.cpuUs / answers : NaN,
      heap_bytes_after: heapAfter,
      rss_bytes_streaming: rssStreaming,
      live_after_gc: live ? { rss_bytes: live.rss, heap_bytes: live.heapUsed } : null,
      cores,
      answers,
      errors: load?.errors ?? 0,
      error_samples: load?.errorSamples ?? [],
    };
  } finally {
    probe.close();
    await load?.stop(answerMs + 5000);
  }
}
