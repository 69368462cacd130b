/**
 * The machine a run happened on, reported with its results: cores, CPU model,
 * memory, kernel, Deno (and Node, for the peer), and the open-file limit that
 * bounds how many sockets a process can hold.
 *
 * @module
 */

/** What the results are reported with. */
export interface Machine {
  cpu_model: string;
  cores: number;
  memory_gib: number;
  os: string;
  deno: string;
  v8: string;
  node: string | null;
  open_files_limit: { soft: number; hard: number };
}

/** The soft and hard limits on open files of this process. */
export function openFilesLimit(): { soft: number; hard: number } {
  const text = Deno.readTextFileSync("/proc/self/limits");
  const m = text.match(/^Max open files\s+(\S+)\s+(\S+)/m);
  const n = (
    s: string | undefined,
  ) => (s === undefined || s === "unlimited" ? Infinity : Number(s));
  return { soft: n(m?.[1]), hard: n(m?.[2]) };
}

async function nodeVersion(): Promise<string | null> {
  try {
    const out = await new Deno.Command("node", { args: ["--version"], stderr: "null" }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

/** Reads the machine's description. */
export async function describeMachine(): Promise<Machine> {
  let cpu = "unknown";
  try {
    cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/^model name\s*:\s*(.+)$/m)?.[1] ?? cpu;
  } catch {
    // Not Linux; the bench needs /proc anyway.
  }
  return {
    cpu_model: cpu.trim(),
    cores: navigator.hardwareConcurrency,
    memory_gib: Math.round((Deno.systemMemoryInfo().total / 2 ** 30) * 10) / 10,
    os: `${Deno.build.os} ${Deno.osRelease()} ${Deno.build.arch}`,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    node: await nodeVersion(),
    open_files_limit: openFilesLimit(),
  };
}
