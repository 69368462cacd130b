/**
 * A/B: two gateways under the same load at the same time, so that whatever
 * else the machine does hits both. A is this checkout, B another one
 * (`--baseline DIR`, e.g. a git archive of an older commit or a copy with an
 * experiment), or this checkout with other environment (`--b-env KEY=VALUE`).
 * Each gets `--streams` background streams from the same stand-in; CPU per
 * relayed token is read over `--windows` windows of `--window-s` seconds and
 * the ratio B ÷ A is reported per window and as the median.
 *
 *     deno run -A bench/ab.ts --baseline /tmp/before [--streams 100] [--windows 6] [--window-s 10]
 *     deno run -A bench/ab.ts --b-env UPSTREAM_TRANSPORT=fetch
 *
 * @module
 */
import { parseArgs } from "node:util";
import { startGateway, startStandin, targetOf } from "./servers.ts";
import { StreamLoad } from "./stream_load.ts";
import { CpuMeter, MachineMeter, rssBytesOf } from "./proc.ts";
import { sleep } from "./sockets.ts";
import { stopAll } from "./child.ts";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    baseline: { type: "string" },
    "a-env": { type: "string", multiple: true },
    "b-env": { type: "string", multiple: true },
    streams: { type: "string", default: "100" },
    windows: { type: "string", default: "6" },
    "window-s": { type: "string", default: "10" },
    tokens: { type: "string", default: "100" },
    "gap-ms": { type: "string", default: "50" },
  },
});
const env = (pairs: string[] = []) =>
  Object.fromEntries(pairs.map((p) => [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)]));
const streams = Number(v.streams);
const tokens = Number(v.tokens);
const gapMs = Number(v["gap-ms"]);
const answerMs = (tokens - 1) * gapMs;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const standin = await startStandin({ tokens, gapMs });
try {
  const upstreamUrl = standin.ready.url as string;
  const a = await startGateway({ upstreamUrl, env: env(v["a-env"]) });
  const b = await startGateway({ upstreamUrl, env: env(v["b-env"]), root: v.baseline });
  const targets = [targetOf(a, "A", true), targetOf(b, "B", true)];
  const loads = await Promise.all(targets.map((t) => StreamLoad.start(t, streams, answerMs)));
  await sleep(answerMs); // past the first answers' start-up
  const ratios: number[] = [];
  const rows: string[] = [];
  for (let w = 0; w < Number(v.windows); w++) {
    const meters = targets.map((t) => new CpuMeter(t.pids));
    const machine = new MachineMeter();
    const d0 = loads.map((l) => l.deltas);
    await sleep(Number(v["window-s"]) * 1000);
    const us = meters.map((m, i) => m.read().cpuUs / (loads[i].deltas - d0[i]));
    ratios.push(us[1] / us[0]);
    rows.push(
      `window ${w + 1}: A ${us[0].toFixed(1)} µs/token, B ${us[1].toFixed(1)} µs/token, ` +
        `B/A ${(us[1] / us[0]).toFixed(3)}, machine ${machine.cores().toFixed(2)} cores busy`,
    );
    console.error(rows[rows.length - 1]);
  }
  const rss = targets.map((t) => rssBytesOf(t.pids) / 2 ** 20);
  const errors = loads.map((l) => l.errors);
  console.log(
    `${streams} streams each: B/A CPU per token median ${median(ratios).toFixed(3)} ` +
      `(windows ${ratios.map((r) => r.toFixed(3)).join(", ")}); ` +
      `RSS A ${rss[0].toFixed(0)} MB, B ${rss[1].toFixed(0)} MB; errors A ${errors[0]}, B ${
        errors[1]
      }`,
  );
  await Promise.all(loads.map((l) => l.stop(answerMs + 5000)));
} finally {
  await stopAll();
}
