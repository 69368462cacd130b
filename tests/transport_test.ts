/**
 * The upstream transports against real servers on loopback: a plain HTTP
 * stand-in, the same stand-in behind TLS (a CA and certificate made with
 * openssl here, trusted through `caCerts`), and raw TCP servers that break
 * the protocol on purpose (a reset mid-body, a pooled socket closed under a
 * request, a refused port).
 *
 * @module
 */
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { eventually, startStack, TestClient } from "./helpers.ts";
import {
  createTransport,
  fetchOver,
  FetchTransport,
  type HttpTransport,
  iterate,
  resolveTransportKind,
  SocketTransport,
} from "../supabase/functions/_shared/model/transport.ts";
import { forEachSse, readSse, type SseMessage } from "../supabase/functions/_shared/model/sse.ts";
import { createParser } from "eventsource-parser";

const encoder = new TextEncoder();

/** The events every SSE answer of the stand-in carries; `€` is split across writes. */
const EVENTS = ["é", "€uro", "three", "[DONE]"];
const sseText = EVENTS.map((e) => `data: ${e}\n\n`).join("");
/** Larger than a socket's read buffer, so that it takes many reads. */
const bigText = Array.from({ length: 2000 }, (_, i) => `data: ${i} €\n\n`).join("");

interface Upstream {
  url: string;
  /** The client port of every request: the same port twice is one reused socket. */
  ports: number[];
  /** Streams the client went away from before their end. */
  cancelled: number;
  close(): Promise<void>;
}

/** The stand-in: plain HTTP, or TLS with `tls`. */
function startUpstream(tls?: { cert: string; key: string }): Upstream {
  const closing = Promise.withResolvers<void>();
  const up: Upstream = {
    url: "",
    ports: [],
    cancelled: 0,
    close: async () => {
      closing.resolve();
      await server.shutdown();
    },
  };
  const handler = (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => {
    up.ports.push(info.remoteAddr.port);
    const path = new URL(req.url).pathname;
    if (path === "/chunked") {
      // One write per event, and one character split across two writes.
      const bytes = encoder.encode(sseText);
      const cut = encoder.encode(sseText.slice(0, sseText.indexOf("€"))).length + 1; // inside €
      const parts = [bytes.subarray(0, 12), bytes.subarray(12, cut), bytes.subarray(cut)];
      return new Response(
        new ReadableStream({
          async pull(c) {
            const next = parts.shift();
            if (!next) return c.close();
            await new Promise((r) => setTimeout(r, 1));
            c.enqueue(next);
          },
        }),
        { headers: { "content-type": "text/event-stream" } },
      );
    }
    if (path === "/length") {
      return new Response(sseText, { headers: { "content-type": "text/event-stream" } });
    }
    if (path === "/big") return new Response(bigText);
    if (path === "/limited") {
      return Response.json({ error: { code: 429, message: "slow down" } }, {
        status: 429,
        headers: { "retry-after": "7" },
      });
    }
    if (path === "/hold") {
      // One event, then nothing until the client goes away.
      return new Response(
        new ReadableStream({
          start(c) {
            c.enqueue(encoder.encode("data: first\n\n"));
          },
          cancel() {
            up.cancelled++;
          },
        }),
        { headers: { "content-type": "text/event-stream" } },
      );
    }
    if (path === "/hang") return closing.promise.then(() => new Response(null, { status: 499 }));
    return new Response("not found", { status: 404 });
  };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {}, ...(tls ?? {}) },
    handler,
  );
  up.url = `${tls ? "https" : "http"}://127.0.0.1:${server.addr.port}`;
  return up;
}

/** A CA, a certificate it signed for 127.0.0.1, and a CA that signed nothing. */
async function makeCertificates() {
  const dir = await Deno.makeTempDir({ prefix: "transport-test-" });
  const run = async (...args: string[]) => {
    const out = await new Deno.Command("openssl", { args, cwd: dir, stderr: "piped" }).output();
    if (!out.success) {
      throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(out.stderr)}`);
    }
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const ca = (name: string) =>
    run(
      "req",
      "-x509",
      ...ec,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    );
  try {
    await ca("test-ca");
    await ca("other-ca");
    await run("req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1");
    await Deno.writeTextFile(
      `${dir}/leaf.ext`,
      "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n" +
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    await run(
      "x509",
      "-req",
      "-in",
      "leaf.csr",
      "-CA",
      "test-ca.pem",
      "-CAkey",
      "test-ca.key",
      "-CAcreateserial",
      "-out",
      "leaf.pem",
      "-days",
      "2",
      "-extfile",
      "leaf.ext",
    );
    const read = (f: string) => Deno.readTextFile(`${dir}/${f}`);
    return {
      ca: await read("test-ca.pem"),
      otherCa: await read("other-ca.pem"),
      cert: await read("leaf.pem"),
      key: await read("leaf.key"),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const certs = await makeCertificates();

async function rejects(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

async function dataOf(messages: AsyncIterable<SseMessage>): Promise<string[]> {
  const out: string[] = [];
  for await (const m of messages) if (m.kind === "data") out.push(m.data);
  return out;
}

/** Runs `fn` against a fresh stand-in (plain or TLS) and a socket transport trusting its CA. */
function bothSchemes(
  name: string,
  fn: (up: Upstream, t: SocketTransport) => Promise<void>,
): void {
  for (const scheme of ["http", "https"] as const) {
    Deno.test(`socket transport (${scheme}): ${name}`, async () => {
      const up = startUpstream(scheme === "https" ? certs : undefined);
      const t = new SocketTransport({ caCerts: [certs.ca] });
      try {
        await fn(up, t);
      } finally {
        t.close();
        await up.close();
      }
    });
  }
}

bothSchemes(
  "a chunked SSE body arrives whole, a character split across writes included",
  async (up, t) => {
    const res = await t.request(`${up.url}/chunked`, { method: "POST", body: "{}" });
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("content-type"), "text/event-stream");
    assertEquals(await dataOf(readSse(res.body)), EVENTS);
  },
);

bothSchemes(
  "a content-length body arrives whole; chunks stay valid after later reads",
  async (up, t) => {
    const res = await t.request(`${up.url}/length`, { method: "POST", body: "{}" });
    assertEquals(res.headers.get("content-length"), String(encoder.encode(sseText).length));
    assertEquals(await dataOf(readSse(res.body)), EVENTS);
    const big = await t.request(`${up.url}/big`, { method: "POST", body: "{}" });
    const chunks: Uint8Array[] = [];
    for await (const chunk of big.body) chunks.push(chunk);
    assert(chunks.length > 3, `${chunks.length} chunks`);
    const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    chunks.reduce((at, c) => (all.set(c, at), at + c.length), 0);
    assertEquals(new TextDecoder().decode(all), bigText);
  },
);

bothSchemes(
  "keep-alive: sequential requests reuse one socket, error bodies included",
  async (up, t) => {
    for (const path of ["/length", "/limited", "/chunked", "/length"]) {
      const res = await t.request(`${up.url}${path}`, { method: "POST", body: "{}" });
      await res.text();
      await eventually(() => t.stats().idle === 1, "the socket back in the pool");
    }
    assertEquals(t.stats().connects, 1);
    assertEquals(new Set(up.ports).size, 1, `client ports ${up.ports}`);
  },
);

bothSchemes("a pooled socket outlives the signal of the request that opened it", async (up, t) => {
  const first = new AbortController();
  await (await t.request(`${up.url}/length`, { method: "POST", signal: first.signal })).text();
  await eventually(() => t.stats().idle === 1, "the socket in the pool");
  first.abort(new Error("that request's query was cancelled later"));
  assertEquals(await (await t.request(`${up.url}/length`, { method: "POST" })).text(), sseText);
  assertEquals([t.stats().connects, new Set(up.ports).size], [1, 1]);
});

bothSchemes("status codes and Retry-After are passed through with the body", async (up, t) => {
  const res = await t.request(`${up.url}/limited`, { method: "POST", body: "{}" });
  assertEquals(res.status, 429);
  assertEquals(res.headers.get("retry-after"), "7");
  assertEquals(JSON.parse(await res.text()).error.message, "slow down");
});

bothSchemes(
  "leaving an SSE loop at [DONE] keeps the socket for the next request",
  async (up, t) => {
    const res = await t.request(`${up.url}/chunked`, { method: "POST", body: "{}" });
    for await (const m of readSse(res.body)) if (m.kind === "data" && m.data === "three") break;
    await eventually(() => t.stats().idle === 1, "the drained socket back in the pool");
    await (await t.request(`${up.url}/length`, { method: "POST", body: "{}" })).text();
    assertEquals(t.stats().connects, 1);
  },
);

bothSchemes(
  "forEachSse: false stops and keeps the socket; a promise pauses reading",
  async (up, t) => {
    const res = await t.request(`${up.url}/chunked`, { method: "POST", body: "{}" });
    const seen: string[] = [];
    let release = () => {};
    const done = forEachSse(res.body, (m) => {
      if (m.kind !== "data") return;
      seen.push(m.data);
      if (m.data === "é") return new Promise<void>((r) => release = r);
      return m.data !== "three";
    });
    await eventually(() => seen.length === 1, "the first event");
    // Paused: the next events have arrived by now but are not handed out.
    await new Promise((r) => setTimeout(r, 20));
    assertEquals(seen, ["é"]);
    release();
    await done;
    assertEquals(seen, ["é", "€uro", "three"]);
    await eventually(() => t.stats().idle === 1, "the drained socket back in the pool");
  },
);

bothSchemes(
  "forEachSse: an exception in the callback rejects and closes the body",
  async (up, t) => {
    const res = await t.request(`${up.url}/hold`, { method: "POST", body: "{}" });
    const oops = new Error("bad chunk");
    const err = await rejects(forEachSse(res.body, () => {
      throw oops;
    }));
    assertEquals(err, oops);
    await eventually(() => up.cancelled === 1, "the stand-in to see its stream cancelled");
  },
);

bothSchemes(
  "an abort mid-body rejects the read and releases the upstream connection",
  async (up, t) => {
    const ac = new AbortController();
    const res = await t.request(`${up.url}/hold`, {
      method: "POST",
      body: "{}",
      signal: ac.signal,
    });
    const events = readSse(res.body);
    const first = await events.next();
    assertEquals(first.value, { kind: "data", data: "first" });
    const reason = new Error("user cancelled");
    const pending = events.next();
    ac.abort(reason);
    assertEquals(await rejects(pending), reason);
    await eventually(() => up.cancelled === 1, "the stand-in to see its stream cancelled");
    assertEquals(t.stats().open, 0);
  },
);

bothSchemes(
  "an abort while waiting for the head rejects with the signal's reason",
  async (up, t) => {
    const ac = new AbortController();
    const pending = t.request(`${up.url}/hang`, { method: "POST", body: "{}", signal: ac.signal });
    await eventually(() => up.ports.length === 1, "the request to arrive");
    ac.abort(new Error("first-token timeout"));
    assertEquals(String(await rejects(pending)), "Error: first-token timeout");
    assertEquals(t.stats().open, 0);
  },
);

bothSchemes(
  "the fetch adapter: Response shape, and readSse reads its body directly",
  async (up, t) => {
    const f = fetchOver(t);
    const res = await f(`${up.url}/chunked`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert(res.ok);
    assertEquals(await dataOf(readSse(res.body!)), EVENTS);
    const limited = await f(`${up.url}/limited`, { method: "POST", body: "{}" });
    assertEquals([limited.ok, limited.status, limited.headers.get("retry-after")], [
      false,
      429,
      "7",
    ]);
    assertStringIncludes(await limited.text(), "slow down");
    // A plain Web Streams reader sees the same bytes.
    const viaStream = await f(`${up.url}/length`, { method: "POST", body: "{}" });
    assertEquals(await new Response(viaStream.body).text(), sseText);
  },
);

Deno.test("socket transport (https): a certificate from an untrusted CA is refused", async () => {
  const up = startUpstream(certs);
  const untrusting = [new SocketTransport(), new SocketTransport({ caCerts: [certs.otherCa] })];
  try {
    for (const t of untrusting) {
      const err = await rejects(t.request(`${up.url}/length`, { method: "POST", body: "{}" }));
      assert(err instanceof TypeError, `got ${err}`);
      assertStringIncludes(String((err as TypeError).cause), "certificate");
      assertEquals(t.stats().open, 0);
    }
    assertEquals(up.ports.length, 0, "no request reached the server");
  } finally {
    for (const t of untrusting) t.close();
    await up.close();
  }
});

Deno.test("socket transport (https): a certificate for another name is refused", async () => {
  const up = startUpstream(certs);
  const t = new SocketTransport({ caCerts: [certs.ca] });
  try {
    const url = up.url.replace("127.0.0.1", "localhost");
    const err = await rejects(t.request(`${url}/length`, { method: "POST", body: "{}" }));
    assert(err instanceof TypeError, `got ${err}`);
    assertStringIncludes(String((err as TypeError).cause), "not valid for name");
    assertEquals(up.ports.length, 0);
  } finally {
    t.close();
    await up.close();
  }
});

/** A raw TCP server: `onRequest(conn, n)` gets each request head (n counts per socket). */
function rawServer(onRequest: (conn: Deno.Conn, n: number) => Promise<void> | void) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let requests = 0;
  const serveConn = async (conn: Deno.Conn) => {
    const buf = new Uint8Array(16 * 1024);
    let text = "";
    let n = 0;
    try {
      for (;;) {
        const got = await conn.read(buf);
        if (got === null) break;
        text += new TextDecoder().decode(buf.subarray(0, got));
        // The requests here have small bodies that arrive with their head.
        let end: number;
        while ((end = text.indexOf("\r\n\r\n")) >= 0) {
          const length = Number(/content-length: (\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
          if (text.length < end + 4 + length) break;
          text = text.slice(end + 4 + length);
          requests++;
          await onRequest(conn, ++n);
        }
      }
    } catch {
      // The test closed it.
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }
  };
  (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      serveConn(conn);
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    get requests() {
      return requests;
    },
    close() {
      listener.close();
      for (const c of conns) c.close();
    },
  };
}

const write = (conn: Deno.Conn, text: string) => conn.write(encoder.encode(text));

Deno.test("socket transport: a socket cut mid-body fails the read, not a silent end", async () => {
  const server = rawServer(async (conn) => {
    await write(
      conn,
      "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" +
        "e\r\ndata: first\n\n\r\n",
    );
    conn.close();
  });
  const t = new SocketTransport();
  try {
    const res = await t.request(server.url, { method: "POST", body: "{}" });
    const events = readSse(res.body);
    assertEquals((await events.next()).value, { kind: "data", data: "first" });
    const err = await rejects(events.next());
    assert(err instanceof TypeError, `got ${err}`);
    assertEquals(t.stats().open, 0);
  } finally {
    t.close();
    server.close();
  }
});

Deno.test("socket transport: chunk extensions and trailers are read, and the socket reused", async () => {
  const server = rawServer(async (conn) => {
    await write(
      conn,
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" +
        "5;name=x\r\nhello\r\n9\r\n, world!\n\r\n0\r\nx-checksum: 1\r\n\r\n",
    );
  });
  const t = new SocketTransport();
  try {
    for (let i = 0; i < 2; i++) {
      const res = await t.request(server.url, { method: "POST", body: "{}" });
      assertEquals(await res.text(), "hello, world!\n");
      await eventually(() => t.stats().idle === 1, "the socket back in the pool");
    }
    assertEquals([t.stats().connects, server.requests], [1, 2]);
  } finally {
    t.close();
    server.close();
  }
});

Deno.test("socket transport: a content-length body cut short fails the read", async () => {
  const server = rawServer(async (conn) => {
    await write(conn, "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\ndata: first\n\n");
    conn.close();
  });
  const t = new SocketTransport();
  try {
    const res = await t.request(server.url, { method: "POST", body: "{}" });
    assert(await rejects(res.text()) instanceof TypeError);
  } finally {
    t.close();
    server.close();
  }
});

Deno.test("socket transport: a pooled socket the server dropped is replaced, not failed", async () => {
  // The second request on a socket is never answered: the server closes it.
  const server = rawServer(async (conn, n) => {
    if (n === 1) await write(conn, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    else conn.close();
  });
  const t = new SocketTransport();
  try {
    assertEquals(await (await t.request(server.url, { method: "POST", body: "a" })).text(), "ok");
    await eventually(() => t.stats().idle === 1, "the socket in the pool");
    const res = await t.request(server.url, { method: "POST", body: "b" });
    assertEquals([res.status, await res.text()], [200, "ok"]);
    assertEquals([t.stats().connects, server.requests], [2, 3]);
  } finally {
    t.close();
    server.close();
  }
});

Deno.test("socket transport: a refused connection rejects with a TypeError", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const t = new SocketTransport();
  try {
    const err = await rejects(t.request(`http://127.0.0.1:${port}/`, { method: "POST" }));
    assert(err instanceof TypeError, `got ${err}`);
    assertEquals(t.stats().open, 0);
  } finally {
    t.close();
  }
});

Deno.test("readSse: a character split across chunks of a body source is decoded whole", async () => {
  const bytes = encoder.encode("data: a€\n\ndata: €b\n\n");
  const cuts = [0, 9, 10, 18, 20, bytes.length]; // inside both € and after the first event
  const chunks = cuts.slice(1).map((end, i) => bytes.slice(cuts[i], end));
  const source = {
    read: () => Promise.resolve(chunks.shift() ?? null),
    cancel: () => {},
    [Symbol.asyncIterator]: () => {
      throw new Error("not used");
    },
  };
  assertEquals(await dataOf(readSse(source)), ["a€", "€b"]);
});

Deno.test("readSse: any chunking of any SSE text gives what the parser gives for the whole", async () => {
  const corpus = [
    ": OPENROUTER PROCESSING\n\n",
    'data: {"a":"é"}\n\n',
    "data:no space\n\n",
    "data:\n\n",
    "event: surprise\ndata: typed\n\n",
    "data: line one\ndata: line two\n\n",
    "id: 7\nretry: 100\ndata: with id\n\n",
    "data: crlf\r\n\r\n",
    ":comment\n\n",
    "data: x\n\n\n\n",
    "garbage line\n\n",
    "data: [DONE]\n\n",
  ];
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let round = 0; round < 300; round++) {
    const pieces = Array.from(
      { length: 1 + Math.floor(random() * 8) },
      () => corpus[Math.floor(random() * corpus.length)],
    );
    const text = pieces.join("");
    const expected: SseMessage[] = [];
    const parser = createParser({
      onEvent: (e) => expected.push({ kind: "data", data: e.data }),
      onComment: (c) => expected.push({ kind: "comment", text: c }),
    });
    parser.feed(text + "\n\n");
    // Cuts between whole events (the fast path) and at random bytes (the parser).
    const bytes = encoder.encode(text);
    const cuts = new Set([0, bytes.length]);
    let offset = 0;
    for (const piece of pieces) {
      offset += encoder.encode(piece).length;
      if (random() < 0.6) cuts.add(offset);
    }
    if (random() < 0.5) {
      for (let k = 0; k < 3; k++) cuts.add(Math.floor(random() * bytes.length));
    }
    const sorted = [...cuts].sort((x, y) => x - y);
    const chunks = sorted.slice(1).map((end, i) => bytes.slice(sorted[i], end));
    const sourceOf = (parts: Uint8Array[]) => {
      const source = {
        read: () => Promise.resolve(parts.shift() ?? null),
        cancel: () => {},
        [Symbol.asyncIterator]: () => iterate(source),
      };
      return source;
    };
    const got: SseMessage[] = [];
    for await (const m of readSse(sourceOf([...chunks]))) got.push(m);
    assertEquals(got, expected, JSON.stringify(text));
    const pushed: SseMessage[] = [];
    await forEachSse(sourceOf(chunks), (m) => void pushed.push(m));
    assertEquals(pushed, expected, JSON.stringify(text));
  }
});

Deno.test("transport choice: auto is socket unless a proxy is set; fetch stays fetch", () => {
  assertEquals(resolveTransportKind("auto", {}), "socket");
  assertEquals(resolveTransportKind("auto", { https_proxy: "http://proxy:3128" }), "fetch");
  assertEquals(resolveTransportKind("fetch", {}), "fetch");
  const t: HttpTransport = createTransport("fetch");
  assert(t instanceof FetchTransport);
  assertEquals(fetchOver(t), fetch);
});

for (const kind of ["fetch", "socket"]) {
  Deno.test(`gateway with UPSTREAM_TRANSPORT=${kind}: an answer streams end to end`, async () => {
    const stack = await startStack({ UPSTREAM_TRANSPORT: kind });
    try {
      const { client } = await TestClient.open(stack.wsUrl);
      stack.sim.script({ kind: "stream", tokens: ["Hel", "lo ", "wörld"] });
      const id = client.query("hi");
      const done = await client.terminal(id, 3000);
      assertEquals(done.content, "Hello wörld");
      assertEquals(client.framesOf(id).filter((f) => f.done === false).length, 3);
      await client.close();
    } finally {
      await stack.close();
    }
  });
}
