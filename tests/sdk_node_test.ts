import { assert, assertEquals } from "./assert.ts";
import { deadline, startStack } from "./helpers.ts";
import { startTcpProxy } from "./tcp_proxy.ts";

const nodeDir = new URL("../client/node/", import.meta.url).pathname;

async function run(cmd: string, args: string[], cwd?: string): Promise<void> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function hasNode(): Promise<boolean> {
  try {
    return (await new Deno.Command("node", { args: ["--version"], stdout: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

Deno.test("sdk under Node 20+ with ws: an answer survives a network drop", async (t) => {
  if (!(await hasNode())) {
    console.log("skipped: node is not installed (the SDK's Node check needs Node 20+ and npm)");
    return;
  }
  try {
    await Deno.stat(`${nodeDir}node_modules/ws/package.json`);
  } catch {
    await run("npm", ["ci", "--no-audit", "--no-fund", "--prefix", nodeDir]);
  }
  await run(Deno.execPath(), [
    "bundle",
    "--quiet",
    "--platform",
    "browser",
    "-o",
    `${nodeDir}dist/agent_client.js`,
    new URL("../client/mod.ts", import.meta.url).pathname,
  ]);

  const stack = await startStack({ RESUME_WINDOW_SECONDS: "10" });
  const proxy = startTcpProxy(stack.server.port);
  const tokens = Array.from({ length: 40 }, (_, i) => `n${i} `);
  stack.sim.when("[node]", { kind: "stream", tokens, gapMs: 5 });
  const child = new Deno.Command("node", {
    args: ["run_sdk.mjs", `ws://127.0.0.1:${proxy.port}`],
    cwd: nodeDir,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const events: Record<string, unknown>[] = [];
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    await t.step("stream, drop, resume", async () => {
      await deadline(
        (async () => {
          for (;;) {
            const { value, done } = await lines.read();
            if (done) break;
            buffer += value;
            let nl;
            while ((nl = buffer.indexOf("\n")) >= 0) {
              const event = JSON.parse(buffer.slice(0, nl));
              buffer = buffer.slice(nl + 1);
              events.push(event);
              if (event.event === "first_delta") proxy.cutAll();
            }
          }
        })(),
        15_000,
        "the node client to finish",
      );
    });
    const done = events.find((e) => e.event === "done")!;
    assertEquals(done.content, tokens.join(""));
    assertEquals(done.streamed, tokens.join(""), "no delta lost or repeated");
    assert(events.some((e) => e.event === "open" && e.resumed === true), "it resumed");
    assertEquals((await child.status).code, 0);
  } finally {
    try {
      child.kill();
    } catch {
      // Already exited.
    }
    await child.status;
    await proxy.close();
    await stack.close();
  }
});
