/**
 * The local tools a newcomer meets first: `deno task start` and the offline
 * simulator.
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import { deadline, startStack, TestClient } from "./helpers.ts";

const root = new URL("../", import.meta.url);
const path = (p: string) => new URL(p, root).pathname;

/** The variables a child Deno needs to find its cache; nothing of ours leaks in. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const name of ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** Runs `dev/start.ts` (what `deno task start` runs) in `cwd`; returns its `server_started` line. */
async function startIn(cwd: string, env: Record<string, string>): Promise<Record<string, unknown>> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--config=${path("deno.json")}`,
      "--allow-net",
      "--allow-env",
      "--allow-read",
      path("dev/start.ts"),
    ],
    cwd,
    clearEnv: true,
    env: { ...baseEnv(), PORT: "0", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output: string[] = [];
  try {
    const lines = child.stdout.pipeThrough(new TextDecoderStream());
    const started = (async () => {
      let buf = "";
      for await (const chunk of lines) {
        buf += chunk;
        output.push(chunk);
        const line = buf.split("\n").find((l) => l.includes('"server_started"'));
        if (line) return JSON.parse(line);
      }
      throw new Error("exited before server_started");
    })();
    return await deadline(started, 15_000, `server_started; output: ${output.join("")}`);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await child.stderr.cancel();
  }
}

Deno.test("start: `deno task start` reads .env, the environment wins, and no .env is fine", async () => {
  const withEnv = await Deno.makeTempDir();
  const without = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${withEnv}/.env`,
      "MODEL=dotenv/model\nOPENROUTER_BASE_URL=http://dotenv.invalid/api/v1\n",
    );
    const [a, b] = await Promise.all([
      startIn(withEnv, { OPENROUTER_BASE_URL: "http://env.invalid/api/v1" }),
      startIn(without, {}),
    ]);
    assertEquals([a.model, a.upstream], ["dotenv/model", "http://env.invalid/api/v1"]);
    assertEquals([b.model, b.upstream], ["openai/gpt-4-turbo", "https://openrouter.ai/api/v1"]);
  } finally {
    await Deno.remove(withEnv, { recursive: true });
    await Deno.remove(without, { recursive: true });
  }
});

Deno.test("simulator: the cost it reports is a clean decimal, without float noise", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    const costs: number[] = [];
    for (const q of ["hi", "what is a socket", "one two three four five six seven", "x y z"]) {
      const final = await client.terminal(client.query(q));
      costs.push(final.usage.cost);
    }
    for (const cost of costs) {
      assert(cost > 0 && String(cost) === String(Number(cost.toFixed(6))), `cost ${cost}`);
    }
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("simulator: a dropped connection prints no stack trace", async () => {
  // A child process, so that whatever the runtime prints for the drop is captured.
  const script = `
    import { startSimulator } from ${JSON.stringify(path("dev/openrouter_simulator.ts"))};
    const sim = startSimulator();
    sim.script({ kind: "drop", afterTokens: 2 });
    const res = await fetch(sim.url + "/chat/completions", {
      method: "POST",
      body: JSON.stringify({ messages: [{ role: "user", content: "hi" }] }),
    });
    try {
      await res.text();
      console.log("not cut");
    } catch {
      console.log("cut");
    }
    await sim.close();
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    clearEnv: true,
    env: baseEnv(),
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assertEquals(text, "cut\n");
});
