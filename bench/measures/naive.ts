/**
 * The naive design's cost: the same full-length answer asked with
 * `stream: false` (the gateway then sends only the final frame, as a server
 * that waits for the whole answer would) and with streaming. What a user
 * waits for before seeing anything is the first token when streaming, and
 * the whole answer otherwise. `count` clients each ask once each way; their
 * starts are spread over one answer's length, so at most a few run at once.
 *
 * @module
 */
import { Samples } from "../histogram.ts";
import { WsProbe } from "../probes.ts";
import { sleep } from "../sockets.ts";
import type { Target } from "../target.ts";

type Summary = ReturnType<Samples["summary"]>;

/** What the naive measure found. */
export interface NaiveResult {
  queries_each: number;
  /** Until the first visible text. */
  first_text_ms: { streaming: Summary; naive: Summary };
  /** Until the answer is complete. */
  total_ms: { streaming: Summary; naive: Summary };
  /** naive p50 ÷ streaming p50 of the time to the first visible text. */
  ttft_ratio_p50: number;
}

/** Asks `count` full questions each way through the target. */
export async function measureNaive(
  target: Target,
  count: number,
  answerMs: number,
): Promise<NaiveResult> {
  const first = { streaming: new Samples(), naive: new Samples() };
  const total = { streaming: new Samples(), naive: new Samples() };
  const one = async (i: number) => {
    await sleep((i * answerMs) / count);
    const probe = await WsProbe.open(target, 2_000_000 + i);
    try {
      const s = await probe.ask(`A full question ${i}`);
      first.streaming.add(s.firstMs);
      total.streaming.add(s.totalMs);
      const n = await probe.ask(`A full question ${i}`, false);
      first.naive.add(n.firstMs);
      total.naive.add(n.totalMs);
    } finally {
      probe.close();
    }
  };
  await Promise.all(Array.from({ length: count }, (_, i) => one(i)));
  return {
    queries_each: count,
    first_text_ms: { streaming: first.streaming.summary(), naive: first.naive.summary() },
    total_ms: { streaming: total.streaming.summary(), naive: total.naive.summary() },
    ttft_ratio_p50: first.naive.percentile(50) / first.streaming.percentile(50),
  };
}
