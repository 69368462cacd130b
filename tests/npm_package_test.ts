// The npm package as its users get it: `npm pack` in client/, the tarball installed into fresh
// Node projects (with `ws`, and React 18 or 19 with react-test-renderer), then run under Node
// against the real server. Skipped, with one line saying why, where Node or the npm registry
// is missing; a build (type) error is a failure, never a skip.
import { assert, assertEquals } from "./assert.ts";
import { answer, startFakeAgent } from "./fake_agent_server.ts";
import { deadline, startStack } from "./helpers.ts";
import { startTcpProxy } from "./tcp_proxy.ts";

const clientDir = new URL("../client/", import.meta.url).pathname;
// The Node side of these tests, kept out of Deno's type check (they import npm packages that only
// the temporary projects install).
const scriptsDir = new URL("../client/node/", import.meta.url).pathname;
const SCRIPTS = [
  "package_ws.mjs",
  "consumer.ts",
  "react_hooks.mjs",
  "react_tools.mjs",
  "react_conversation.mjs",
  "react_testing.mjs",
];
const REACT = { react19: "19.3.1", react18: "18.3.1" } as const;
const WS = "8.23.0";

type Prepared = { skip: string } | { projects: Record<keyof typeof REACT, string> };

class CommandError extends Error {}

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  if (!out.success) {
    throw new CommandError(`${cmd} ${args.join(" ")}: ${text(out.stderr)}${text(out.stdout)}`);
  }
  return text(out.stdout);
}

async function hasNode(): Promise<boolean> {
  try {
    return (await new Deno.Command("node", { args: ["--version"], stdout: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

/** The reason an npm step failed, in one line. */
function why(e: unknown): string {
  const text = String(e instanceof Error ? e.message : e);
  return text.split("\n").find((l) => /npm (error|ERR!)/.test(l))?.trim() ?? text.slice(0, 200);
}

let prepared: Promise<Prepared> | undefined;

/** Builds, packs and installs once for every test of this file. */
function prepare(): Promise<Prepared> {
  return prepared ??= (async () => {
    if (!(await hasNode())) {
      return { skip: "node is not installed (the npm package needs Node 20+)" };
    }
    try {
      await run("npm", ["ci", "--no-audit", "--no-fund"], clientDir);
    } catch (e) {
      return { skip: `cannot install the build tools from npm: ${why(e)}` };
    }
    await run("npm", ["run", "build"], clientDir); // a type error fails the test
    const tmp = await Deno.makeTempDir({ prefix: "agent-websocket-npm-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));
    await run("npm", ["pack", "--ignore-scripts", "--pack-destination", tmp], clientDir);
    const tarball = [...Deno.readDirSync(tmp)].find((e) => e.name.endsWith(".tgz"))!.name;
    const projects = {} as Record<keyof typeof REACT, string>;
    for (const [name, react] of Object.entries(REACT) as [keyof typeof REACT, string][]) {
      const dir = `${tmp}/${name}`;
      await Deno.mkdir(dir);
      await Deno.writeTextFile(
        `${dir}/package.json`,
        JSON.stringify({
          name: `consumer-${name}`,
          private: true,
          type: "module",
          dependencies: {
            "agent-websocket-client": `file:${tmp}/${tarball}`,
            ws: WS,
            react,
            "react-test-renderer": react,
          },
        }),
      );
      for (const f of SCRIPTS) await Deno.copyFile(`${scriptsDir}${f}`, `${dir}/${f}`);
      try {
        await run("npm", ["install", "--no-audit", "--no-fund"], dir);
      } catch (e) {
        return { skip: `cannot install react@${react} and ws from npm: ${why(e)}` };
      }
      projects[name] = dir;
    }
    return { projects };
  })();
}

/**
 * Runs a Node script of the project and hands each stdout line to `onLine`; resolves with what
 * it printed to stderr.
 */
async function node(
  cwd: string,
  args: string[],
  onLine: (line: string) => void,
  ms: number,
): Promise<string> {
  const child = new Deno.Command("node", { args, cwd, stdout: "piped", stderr: "piped" }).spawn();
  const stderr = new Response(child.stderr).text();
  try {
    await deadline(
      (async () => {
        let buffer = "";
        for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
          buffer += chunk;
          for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
            onLine(buffer.slice(0, nl));
            buffer = buffer.slice(nl + 1);
          }
        }
      })(),
      ms,
      `node ${args.join(" ")}`,
    );
    const { code } = await child.status;
    if (code !== 0) throw new Error(`node ${args[0]} exited ${code}: ${await stderr}`);
    return await stderr;
  } finally {
    try {
      child.kill();
    } catch {
      // Already exited.
    }
    await child.status;
  }
}

Deno.test("npm package: the packed tarball runs under Node 20 with ws; an answer survives a network drop", async () => {
  const p = await prepare();
  if ("skip" in p) return console.log(`skipped: ${p.skip}`);
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "10" });
  const proxy = startTcpProxy(stack.server.port);
  const tokens = Array.from({ length: 40 }, (_, i) => `p${i} `);
  stack.sim.when("[npm]", { kind: "stream", tokens, gapMs: 5 });
  try {
    const events: Record<string, unknown>[] = [];
    await node(p.projects.react19, ["package_ws.mjs", `ws://127.0.0.1:${proxy.port}`], (line) => {
      const event = JSON.parse(line);
      events.push(event);
      if (event.event === "first_delta") proxy.cutAll();
    }, 15_000);
    const done = events.find((e) => e.event === "done")!;
    assertEquals(done.content, tokens.join(""));
    assertEquals(done.streamed, tokens.join(""), "no delta lost or repeated");
    assert(events.some((e) => e.event === "open" && e.resumed === true), "it resumed");
  } finally {
    await proxy.close();
    await stack.close();
  }
});

Deno.test("npm package: its .d.ts files type-check a strict TypeScript consumer, and misuse does not compile", async () => {
  const p = await prepare();
  if ("skip" in p) return console.log(`skipped: ${p.skip}`);
  const dir = p.projects.react19;
  await Deno.writeTextFile(
    `${dir}/tsconfig.json`,
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        module: "nodenext",
        moduleResolution: "nodenext",
        target: "es2022",
        lib: ["es2022", "dom"],
        types: [],
        skipLibCheck: false,
      },
      files: ["consumer.ts"],
    }),
  );
  // consumer.ts holds @ts-expect-error lines: if the types were `any`, tsc would fail on them.
  await run("node", [`${clientDir}node_modules/typescript/bin/tsc`, "-p", "."], dir);
});

for (const name of Object.keys(REACT) as (keyof typeof REACT)[]) {
  Deno.test(`react hooks (${name.replace("react", "React ")}), real server: useAgentChat connects, streams, cancels, and closes on unmount`, async () => {
    const p = await prepare();
    if ("skip" in p) return console.log(`skipped: ${p.skip}`);
    const stack = await startStack();
    const tokens = Array.from({ length: 30 }, (_, i) => `r${i} `);
    // A pause before the first token and gaps between tokens: a user sees "submitted", then the
    // answer grow.
    stack.sim.when("[react-stream]", { kind: "stream", tokens, gapMs: 10, firstTokenDelayMs: 200 });
    stack.sim.when("[react-cancel]", { kind: "stream", tokens: Array(300).fill("z"), gapMs: 20 });
    try {
      const lines: string[] = [];
      const stderr = await node(
        p.projects[name],
        ["react_hooks.mjs", stack.wsUrl, tokens.join("")],
        (l) => lines.push(l),
        30_000,
      );
      assertEquals(lines.filter((l) => l.startsWith("ok ")).map((l) => l.split(" ")[1]), [
        "connected",
        "streamed",
        "cancelled",
        "unmounted",
      ]);
      assert(lines[0].includes(`React ${REACT[name]}`), lines[0]);
      assertEquals(stderr, "", "React printed no warning");
    } finally {
      await stack.close();
    }
  });
}

for (const name of Object.keys(REACT) as (keyof typeof REACT)[]) {
  Deno.test(`react hooks (${name.replace("react", "React ")}), real server: two tabs of one conversation count each other and share the answer stream`, async () => {
    const p = await prepare();
    if ("skip" in p) return console.log(`skipped: ${p.skip}`);
    const stack = await startStack();
    const tokens = Array.from({ length: 20 }, (_, i) => `c${i} `);
    stack.sim.when("[react-room]", { kind: "stream", tokens, gapMs: 5 });
    try {
      const lines: string[] = [];
      const stderr = await node(
        p.projects[name],
        ["react_conversation.mjs", stack.wsUrl, tokens.join("")],
        (l) => lines.push(l),
        30_000,
      );
      assertEquals(lines.filter((l) => l.startsWith("ok ")).map((l) => l.split(" ")[1]), [
        "presence",
        "shared",
        "left",
      ]);
      assertEquals(stderr, "", "React printed no warning");
    } finally {
      await stack.close();
    }
  });
}

for (const name of Object.keys(REACT) as (keyof typeof REACT)[]) {
  Deno.test(`react hooks (${name.replace("react", "React ")}), scripted fake server: useAgentChat shows reasoning and tool calls, asks for approval, runs client tools`, async () => {
    const p = await prepare();
    if ("skip" in p) return console.log(`skipped: ${p.skip}`);
    const fake = startFakeAgent(async (q, s) => {
      const call = { id: q.id, iteration: 1, arguments: {} };
      s.send({ type: "status", id: q.id, state: "thinking", iteration: 1 });
      s.send({ type: "reasoning", id: q.id, delta: "Checking " });
      s.send({ type: "reasoning", id: q.id, delta: "the weather." });
      s.send({
        ...call,
        type: "tool_call",
        tool_call_id: "c1",
        tool: "lookup",
        executor: "server",
        needs_approval: true,
      });
      await s.next((f) => f.type === "approval" && f.approved === true, "approval", 10_000);
      s.send({
        type: "tool_result",
        id: q.id,
        tool_call_id: "c1",
        tool: "lookup",
        ok: true,
        result: "Oslo",
        duration_ms: 1,
      });
      s.send({
        ...call,
        type: "tool_call",
        tool_call_id: "c2",
        tool: "get_weather",
        arguments: { city: "Oslo" },
        executor: "client",
        needs_approval: false,
      });
      const r = await s.next((f) => f.type === "tool_result", "client tool result");
      s.send({
        type: "tool_result",
        id: q.id,
        tool_call_id: "c2",
        tool: "get_weather",
        ok: true,
        result: r.result,
        duration_ms: 1,
      });
      answer(s, q.id, `${r.result.city}: ${r.result.celsius} °C`);
    });
    try {
      const lines: string[] = [];
      const stderr = await node(p.projects[name], ["react_tools.mjs", fake.url], (l) => {
        lines.push(l);
      }, 20_000);
      assertEquals(lines, ["ok approval asked", "ok tools shown"]);
      assertEquals(stderr, "", "React printed no warning");
      const query = fake.sessions[0].received.find((f) => f.type === "query")!;
      assertEquals(query.tools.map((t: { name: string }) => t.name), ["get_weather"]);
    } finally {
      await fake.close();
    }
  });
}
