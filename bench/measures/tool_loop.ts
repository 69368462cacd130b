/**
 * What the agent loop adds: one query whose model asks for a client tool
 * (answered by the client at once) and then answers, against two plain
 * queries of the same answer length — the two model calls the loop makes.
 * One client, one at a time, so the figure is the loop's own latency.
 *
 * @module
 */
import { Samples } from "../histogram.ts";
import { WsProbe } from "../probes.ts";
import type { Target } from "../target.ts";

type Summary = ReturnType<Samples["summary"]>;

/** What the tool-loop measure found. */
export interface ToolLoopResult {
  rounds: number;
  /** Query → tool_call → tool_result → final answer. */
  tool_round_trip_ms: Summary;
  /** Two plain queries, back to back. */
  two_plain_ms: Summary;
  /** tool round trip p50 − two plain p50: what the loop itself costs. */
  overhead_p50_ms: number;
}

/** Runs `rounds` tool round trips and as many pairs of plain queries through the target. */
export async function measureToolLoop(target: Target, rounds: number): Promise<ToolLoopResult> {
  const tool = new Samples();
  const plain = new Samples();
  const probe = await WsProbe.open(target, 3_000_000);
  try {
    for (let i = 0; i < rounds; i++) {
      tool.add((await probe.askWithTool(`toolprobe ${i}`)).totalMs);
      const a = await probe.ask(`probe ${i}a`);
      const b = await probe.ask(`probe ${i}b`);
      plain.add(a.totalMs + b.totalMs);
    }
  } finally {
    probe.close();
  }
  return {
    rounds,
    tool_round_trip_ms: tool.summary(),
    two_plain_ms: plain.summary(),
    overhead_p50_ms: tool.percentile(50) - plain.percentile(50),
  };
}
