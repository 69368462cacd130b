/**
 * `deno task bench`: starts the stand-in, the gateway, a bare echo server and
 * the Cloudflare Agents SDK peer on loopback, each in its own process, drives
 * them with real WebSocket clients from this process, and prints one table
 * (also written as JSON, Markdown and SVG under `bench/results/`). Every
 * figure is measured beside its reference in the same run. `--help` lists the
 * flags; `--smoke` is the CI run. Any harness failure exits non-zero.
 *
 * @module
 */
import { type BenchOptions, parseFlags, USAGE } from "./flags.ts";
import { openFilesLimit } from "./machine.ts";
import { stopAll } from "./child.ts";
import { fdsNeeded, runBench } from "./run.ts";
import { buildRows, renderTable, writeResults } from "./report.ts";

const log = (line: string) =>
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`);

/**
 * Raises the open-file limit by re-running under `ulimit -n` when the hard
 * limit allows it (Deno has no setrlimit). Returns the exit code of the
 * re-run, or null when this process should go on itself.
 */
async function reexecWithMoreFiles(needed: number): Promise<number | null> {
  const { soft, hard } = openFilesLimit();
  if (soft >= needed || hard <= soft || Deno.env.get("BENCH_REEXEC")) return null;
  const target = hard === Infinity ? needed : Math.min(hard, Math.max(needed, soft));
  log(`raising the open-file limit from ${soft} to ${target} (ulimit -n) and re-running`);
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      `ulimit -n ${target} && exec "$@"`,
      "sh",
      Deno.execPath(),
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      ...Deno.args,
    ],
    env: { BENCH_REEXEC: "1" },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  return (await child.status).code;
}

async function main(): Promise<number> {
  let o: BenchOptions;
  try {
    const parsed = parseFlags(Deno.args);
    if (parsed === "help") {
      console.log(USAGE);
      return 0;
    }
    o = parsed;
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : err}\n\n${USAGE}`);
    return 2;
  }
  const reran = await reexecWithMoreFiles(fdsNeeded(o));
  if (reran !== null) return reran;

  // Every phase has its own deadlines; this one catches anything they miss.
  const limitMs = o.smoke ? 120_000 : 60 * 60_000;
  const watchdog = setTimeout(async () => {
    console.error(`bench: still running after ${limitMs / 1000} s; stopping`);
    await stopAll();
    Deno.exit(1);
  }, limitMs);
  Deno.addSignalListener("SIGINT", async () => {
    await stopAll();
    Deno.exit(130);
  });
  try {
    const results = await runBench(o, log);
    const rows = buildRows(results);
    console.log(renderTable(rows, results));
    const files = await writeResults(o.outDir, o.name, results, rows);
    log(`wrote ${files.join(", ")} in ${results.duration_s.toFixed(1)} s`);
    return 0;
  } catch (err) {
    console.error(`\nbench FAILED: ${err instanceof Error ? err.stack : err}`);
    return 1;
  } finally {
    clearTimeout(watchdog);
    await stopAll();
  }
}

Deno.exit(await main());
