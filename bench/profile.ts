/**
 * Summarises a V8 `.cpuprofile` (what `deno run --cpu-prof` writes) as the
 * functions with the most self time. Can also be run on its own:
 *
 *     deno run -A bench/profile.ts path/to/file.cpuprofile [top]
 *
 * @module
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** One function's share of the samples. */
export interface HotFunction {
  function: string;
  where: string;
  self_ms: number;
  /** Of the time the process was not idle. */
  self_percent: number;
}

/** What a profile says. */
export interface ProfileSummary {
  file: string;
  /** What was running (set by the bench). */
  label?: string;
  busy_ms: number;
  idle_ms: number;
  top: HotFunction[];
  /** Self time summed per source file (V8's pseudo-entries such as GC kept apart). */
  by_file: { where: string; self_ms: number; self_percent: number }[];
}

const ROOT = new URL("..", import.meta.url).href;

function shortUrl(url: string): string {
  if (url.startsWith(ROOT)) return url.slice(ROOT.length);
  const npm = url.match(/\/npm\/registry\.npmjs\.org\/(.+)$/);
  if (npm) return `npm:${npm[1]}`;
  return url;
}

/** Self time per function (by name and location), highest first. */
export function summariseProfile(file: string, profile: CpuProfile, top = 15): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const byFunction = new Map<string, { fn: string; where: string; us: number }>();
  const byFile = new Map<string, number>();
  let idleUs = 0;
  let busyUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    const fn = frame.functionName || "(anonymous)";
    if (fn === "(idle)") {
      idleUs += us;
      continue;
    }
    busyUs += us;
    const where = frame.url ? `${shortUrl(frame.url)}:${frame.lineNumber + 1}` : "";
    const file = frame.url ? shortUrl(frame.url) : fn.startsWith("op_") ? "(ops)" : fn;
    byFile.set(file, (byFile.get(file) ?? 0) + us);
    const key = `${fn}@${where}`;
    const entry = byFunction.get(key) ?? { fn, where, us: 0 };
    entry.us += us;
    byFunction.set(key, entry);
  }
  return {
    file,
    busy_ms: busyUs / 1000,
    idle_ms: idleUs / 1000,
    top: [...byFunction.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((e) => ({
        function: e.fn,
        where: e.where,
        self_ms: e.us / 1000,
        self_percent: busyUs > 0 ? (100 * e.us) / busyUs : 0,
      })),
    by_file: [...byFile]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([where, us]) => ({
        where,
        self_ms: us / 1000,
        self_percent: busyUs > 0 ? (100 * us) / busyUs : 0,
      })),
  };
}

/** Reads and summarises the newest `.cpuprofile` in a directory. */
export async function summariseNewestProfile(dir: string, top = 15): Promise<ProfileSummary> {
  let newest: { path: string; mtime: number } | null = null;
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || !entry.name.endsWith(".cpuprofile")) continue;
    const path = `${dir}/${entry.name}`;
    const mtime = (await Deno.stat(path)).mtime?.getTime() ?? 0;
    if (!newest || mtime > newest.mtime) newest = { path, mtime };
  }
  if (!newest) throw new Error(`no .cpuprofile in ${dir}`);
  return summariseProfile(newest.path, JSON.parse(await Deno.readTextFile(newest.path)), top);
}

if (import.meta.main) {
  const [file, top] = Deno.args;
  if (!file) {
    console.error("usage: deno run -A bench/profile.ts FILE.cpuprofile [top]");
    Deno.exit(2);
  }
  const summary = summariseProfile(
    file,
    JSON.parse(await Deno.readTextFile(file)),
    Number(top ?? 20),
  );
  console.log(`busy ${summary.busy_ms.toFixed(0)} ms, idle ${summary.idle_ms.toFixed(0)} ms`);
  console.log("\nby file:");
  for (const f of summary.by_file) {
    console.log(
      `${f.self_percent.toFixed(1).padStart(5)} %  ${
        f.self_ms.toFixed(0).padStart(7)
      } ms  ${f.where}`,
    );
  }
  console.log("\nby function:");
  for (const f of summary.top) {
    console.log(
      `${f.self_percent.toFixed(1).padStart(5)} %  ${
        f.self_ms.toFixed(0).padStart(7)
      } ms  ${f.function}  ${f.where}`,
    );
  }
}
