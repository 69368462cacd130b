/**
 * What reading one chunk of a streamed response body costs, per way of
 * reading it, with nothing else going on: a child process serves `--streams`
 * endless SSE streams (one event every `--gap-ms`), over plain HTTP or TLS
 * (`--tls`: a CA and certificate made with openssl); this process reads them
 * all and reports its own CPU time per chunk received.
 *
 *     deno run -A bench/body_cost.ts [--streams 100] [--seconds 5] [--gap-ms 50] [--tls]
 *
 * Ways: `fetch` + `getReader()`, the socket transport (model/transport_socket.ts),
 * `node:http(s)` with `data` events, and a bare `Deno.connect(Tls)` read loop
 * (no HTTP parsing at all: the floor).
 *
 * @module
 */
import { parseArgs } from "node:util";
import http from "node:http";
import https from "node:https";
import process from "node:process";
import { SocketTransport } from "../supabase/functions/_shared/model/transport.ts";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    streams: { type: "string", default: "100" },
    seconds: { type: "string", default: "5" },
    "gap-ms": { type: "string", default: "50" },
    tls: { type: "boolean", default: false },
    serve: { type: "string" },
  },
});
const streams = Number(v.streams);
const seconds = Number(v.seconds);
const gapMs = Number(v["gap-ms"]);

const EVENT = new TextEncoder().encode(
  `data: {"id":"gen-1","object":"chat.completion.chunk","choices":[{"index":0,` +
    `"delta":{"content":"token3 "},"finish_reason":null}]}\n\n`,
);

/** The server side (run as a child with `--serve PORTFILE`). */
if (v.serve) {
  const cert = Deno.env.get("BODY_COST_CERT");
  const key = Deno.env.get("BODY_COST_KEY");
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {}, ...(cert && key ? { cert, key } : {}) },
    () => {
      let timer: ReturnType<typeof setInterval>;
      return new Response(
        new ReadableStream({
          start(c) {
            timer = setInterval(() => c.enqueue(EVENT), gapMs);
          },
          cancel() {
            clearInterval(timer);
          },
        }),
        { headers: { "content-type": "text/event-stream" } },
      );
    },
  );
  Deno.writeTextFileSync(v.serve, String(server.addr.port));
  // Ends with the parent: stdin closes.
  for await (const _ of Deno.stdin.readable);
  Deno.exit(0);
}

async function certificates(dir: string) {
  const run = async (...args: string[]) => {
    const out = await new Deno.Command("openssl", { args, cwd: dir, stderr: "piped" }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await run(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "1",
    "-subj",
    "/CN=body-cost-ca",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
  );
  await run("req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1");
  await Deno.writeTextFile(
    `${dir}/ext`,
    "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
  );
  await run(
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "leaf.pem",
    "-days",
    "1",
    "-extfile",
    "ext",
  );
  const read = (f: string) => Deno.readTextFile(`${dir}/${f}`);
  return { ca: await read("ca.pem"), cert: await read("leaf.pem"), key: await read("leaf.key") };
}

const dir = await Deno.makeTempDir({ prefix: "body-cost-" });
const certs = v.tls ? await certificates(dir) : null;
const portFile = `${dir}/port`;
const child = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    new URL(import.meta.url).pathname,
    "--serve",
    portFile,
    "--gap-ms",
    String(gapMs),
  ],
  env: certs ? { BODY_COST_CERT: certs.cert, BODY_COST_KEY: certs.key } : {},
  stdin: "piped",
  stdout: "inherit",
  stderr: "inherit",
}).spawn();
let port = 0;
for (let i = 0; i < 200 && !port; i++) {
  await new Promise((r) => setTimeout(r, 50));
  port = Number(await Deno.readTextFile(portFile).catch(() => "0"));
}
if (!port) throw new Error("the server did not start");
const url = `${certs ? "https" : "http"}://127.0.0.1:${port}/`;

type Reader = (count: () => void, stop: AbortSignal) => Promise<void>;

const ways: Record<string, Reader> = {
  "fetch + getReader()": async (count, stop) => {
    const client = certs ? Deno.createHttpClient({ caCerts: [certs.ca] }) : undefined;
    const res = await fetch(url, { client, signal: stop });
    const reader = res.body!.getReader();
    try {
      while (!(await reader.read()).done) count();
    } catch {
      // Stopped.
    } finally {
      client?.close();
    }
  },
  "socket transport": async (count, stop) => {
    const t = new SocketTransport({ caCerts: certs ? [certs.ca] : undefined });
    try {
      const res = await t.request(url, { signal: stop });
      while ((await res.body.read()) !== null) count();
    } catch {
      // Stopped.
    } finally {
      t.close();
    }
  },
  "node:http(s), data events": (count, stop) =>
    new Promise<void>((resolve) => {
      const get = certs ? https.get : http.get;
      const req = get(url, { ca: certs?.ca, signal: stop }, (res) => {
        res.on("data", count);
        res.on("error", () => resolve());
        res.on("close", () => resolve());
      });
      req.on("error", () => resolve());
    }),
  "Deno.connect(Tls) read loop (no HTTP)": async (count, stop) => {
    const conn = certs
      ? await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [certs.ca] })
      : await Deno.connect({ hostname: "127.0.0.1", port });
    stop.addEventListener("abort", () => conn.close(), { once: true });
    await conn.write(new TextEncoder().encode(`GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`));
    const buf = new Uint8Array(16 * 1024);
    try {
      while ((await conn.read(buf)) !== null) count();
    } catch {
      // Stopped.
    }
  },
};

console.log(
  `${streams} streams, one event every ${gapMs} ms, ${seconds} s each, ${
    certs ? "TLS" : "plain HTTP"
  }; CPU of this process per chunk read:`,
);
for (const [name, read] of Object.entries(ways)) {
  const stop = new AbortController();
  let chunks = 0;
  const count = () => chunks++;
  const running = Array.from({ length: streams }, () => read(count, stop.signal));
  await new Promise((r) => setTimeout(r, 1000)); // connect and warm up
  const c0 = process.cpuUsage();
  const n0 = chunks;
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const cpu = process.cpuUsage(c0);
  const n = chunks - n0;
  stop.abort();
  await Promise.all(running);
  console.log(
    `  ${name.padEnd(40)} ${((cpu.user + cpu.system) / n).toFixed(1).padStart(6)} µs per chunk ` +
      `(${n} chunks)`,
  );
}
child.stdin.close();
await child.status;
await Deno.remove(dir, { recursive: true });
