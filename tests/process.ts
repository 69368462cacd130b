/**
 * The function as its own OS process (`deno run …/agent_websocket/index.ts`),
 * for tests that kill a server mid-answer and resume on another.
 *
 * @module
 */
import { deadline, TEST_API_KEY } from "./helpers.ts";
import { DATABASE_URL } from "./db.ts";
import { type Simulator, startSimulator } from "../dev/openrouter_simulator.ts";

/** A server process. */
export interface ServerProcess {
  url: string;
  wsUrl: string;
  lines: string[];
  /** Resolves when the process has exited, for whatever reason. */
  status: Promise<Deno.CommandStatus>;
  /** Kills it at once (SIGKILL: no goodbye, no flush) or gracefully (SIGTERM). */
  kill(signal?: Deno.Signal): Promise<void>;
}

const entry = new URL("../supabase/functions/agent_websocket/index.ts", import.meta.url).pathname;

/** What the child keeps of this process's environment with `clearEnv` (deno's own needs). */
const KEPT = ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME", "TMPDIR"];

/**
 * Starts the function with `env` on a free port and waits until it listens.
 * With `clearEnv` it sees `env` alone (no DATABASE_URL, SESSION_STORE … of
 * the test's environment), as a deployment that sets only what it names.
 */
export async function startServerProcess(
  env: Record<string, string>,
  file = entry,
  opts: { clearEnv?: boolean } = {},
): Promise<ServerProcess> {
  const kept: Record<string, string> = {};
  if (opts.clearEnv) {
    for (const k of KEPT) {
      const v = Deno.env.get(k);
      if (v !== undefined) kept[k] = v;
    }
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", file],
    clearEnv: opts.clearEnv ?? false,
    env: { ...kept, PORT: "0", LOG_LEVEL: "info", NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  let onLine: (line: string) => void = () => {};
  const read = async (stream: ReadableStream<Uint8Array>) => {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        onLine(line);
      }
    }
  };
  const pumps = Promise.all([read(child.stdout), read(child.stderr)]);
  const started = new Promise<string>((resolve) => {
    const check = (line: string) => {
      if (line.includes('"server_started"')) resolve(JSON.parse(line).url);
    };
    lines.forEach(check);
    onLine = check;
  });
  // A process that exits at startup (bad config, no schema) fails at once with what it said,
  // instead of a timeout with an empty message.
  const exitedEarly = child.status.then(async (s) => {
    await pumps;
    throw new Error(
      `server process exited (code ${s.code}) before it listened:\n${lines.join("\n")}`,
    );
  });
  exitedEarly.catch(() => {});
  let url: string;
  try {
    url = await deadline(Promise.race([started, exitedEarly]), 15_000, "server process to start");
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
    throw err instanceof Error && err.message.startsWith("timed out")
      ? new Error(`${err.message}; output:\n${lines.join("\n")}`)
      : err;
  }
  let killed = false;
  return {
    url,
    wsUrl: url.replace("http://", "ws://"),
    lines,
    status: child.status,
    async kill(signal: Deno.Signal = "SIGKILL") {
      if (!killed) {
        killed = true;
        try {
          child.kill(signal);
        } catch {
          // Already gone.
        }
      }
      await child.status;
      await pumps;
    },
  };
}

/** The environment of a server process on the test database, with short timers. */
export function durableEnv(simUrl: string, extra: Record<string, string> = {}) {
  return {
    OPENROUTER_API_KEY: TEST_API_KEY,
    OPENROUTER_BASE_URL: simUrl,
    SESSION_STORE: "postgres",
    DATABASE_URL,
    RESUME_WINDOW_SECONDS: "30",
    SWEEP_INTERVAL_SECONDS: "0.2",
    FRAME_FLUSH_MS: "10",
    RATE_LIMIT_BURST: "100",
    ...extra,
  };
}

/**
 * Runs `fn` with the OpenRouter stand-in and two server processes on one
 * database (`extra` added to their environment); cleans up after.
 */
export async function withTwoProcesses(
  fn: (sim: Simulator, a: ServerProcess, b: ServerProcess) => Promise<void>,
  extra: Record<string, string> = {},
): Promise<void> {
  const sim = startSimulator({ tokenDelayMs: 2 });
  const a = await startServerProcess(durableEnv(sim.url, extra));
  const b = await startServerProcess(durableEnv(sim.url, extra));
  try {
    await fn(sim, a, b);
  } finally {
    await a.kill("SIGTERM");
    await b.kill("SIGTERM");
    await sim.close();
  }
}
