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
  /** Kills it at once (SIGKILL: no goodbye, no flush) or gracefully (SIGTERM). */
  kill(signal?: Deno.Signal): Promise<void>;
}

const entry = new URL("../supabase/functions/agent_websocket/index.ts", import.meta.url).pathname;

/** Starts the function with `env` on a free port and waits until it listens. */
export async function startServerProcess(
  env: Record<string, string>,
  file = entry,
): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", file],
    env: { PORT: "0", LOG_LEVEL: "info", NO_COLOR: "1", ...env },
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
  const url = await deadline(
    new Promise<string>((resolve) => {
      const check = (line: string) => {
        if (line.includes('"server_started"')) resolve(JSON.parse(line).url);
      };
      lines.forEach(check);
      onLine = check;
    }),
    15_000,
    `server process to start; output: ${lines.join("\n")}`,
  );
  let killed = false;
  return {
    url,
    wsUrl: url.replace("http://", "ws://"),
    lines,
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
