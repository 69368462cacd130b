/**
 * Issue 11, attacks as an attacker or a buggy peer would run them, against
 * the real server: forged token floods, a slow key server, an oversized
 * upstream event, text the database cannot store, an oversized /notify.
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import { collectGarbage, deadline, eventually, startStack, TestClient } from "./helpers.ts";
import { es256, startAuthServer } from "./auth_server.ts";
import { DATABASE_URL, dbAvailable } from "./db.ts";
import postgres from "postgres";
import { createSupabaseVerifier } from "../supabase/functions/_shared/platform/auth.ts";

/** Opens a raw upgrade with the token as a subprotocol; resolves with the status line. */
async function handshake(port: number, token: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const request = [
      "GET / HTTP/1.1",
      `Host: 127.0.0.1:${port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version: 13",
      `Sec-WebSocket-Protocol: agent-websocket.v1, jwt-${token}`,
      "",
      "",
    ].join("\r\n");
    await conn.write(new TextEncoder().encode(request));
    const buf = new Uint8Array(1024);
    const n = await conn.read(buf);
    return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
  } finally {
    conn.close();
  }
}

const randomKid = () => `kid-${crypto.randomUUID()}`;

Deno.test("attack: 400 handshakes with random kids cost one JWKS fetch and no /user call", async () => {
  const auth = await startAuthServer();
  const stack = await startStack({ AUTH_MODE: "supabase", SUPABASE_URL: auth.url });
  try {
    const forge = (n: number) =>
      Promise.all(Array.from({ length: n }, () => es256(auth, {}, randomKid())));
    // Cold: all 200 at once, before anything is cached. Those beyond the bound on
    // waiting verifications get 503 at once; the rest share one fetch.
    const cold = await Promise.all(
      (await forge(200)).map((t) => handshake(stack.server.port, t)),
    );
    assertEquals(cold.filter((s) => s.includes("101") || s.includes("503")).length, 200);
    assertEquals(auth.fetches, 1, "one JWKS fetch for 200 cold unknown kids");
    // Warm: 200 more at once are each refused with 4001, from the cache.
    const clients = await Promise.all(
      (await forge(200)).map((t) =>
        TestClient.connect(stack.wsUrl, ["agent-websocket.v1", `jwt-${t}`])
      ),
    );
    const codes = await Promise.all(clients.map(async (c) => (await c.closed).code));
    assertEquals(codes.filter((c) => c === 4001).length, 200, "every forged token refused");
    assertEquals(auth.fetches, 1, "one JWKS fetch for 220 unknown kids");
    assertEquals(auth.userCalls, 0, "the auth server's /user is never asked");
    const real = await TestClient.connect(stack.wsUrl, [
      "agent-websocket.v1",
      `jwt-${await es256(auth)}`,
    ]);
    await real.waitFor((f) => f.event === "connected", "a real user is served");
    await real.close();
    console.log(
      `random kids: 400 handshakes → ${auth.fetches} JWKS fetch, ${auth.userCalls} /user calls; ` +
        `cold: ${cold.filter((s) => s.includes("503")).length} × 503`,
    );
  } finally {
    await stack.close();
    await auth.close();
  }
});

Deno.test("attack: 1500 handshakes on a held JWKS: bounded waiters, one fetch, real users served", async () => {
  const auth = await startAuthServer();
  // No cooldown, so that every forged kid asks for a refresh: the worst case.
  const verifier = createSupabaseVerifier({
    supabaseUrl: auth.url,
    issuer: `${auth.url}/auth/v1`,
    audience: "authenticated",
    cooldownMs: 0,
    maxPending: 50,
    timeoutMs: 10_000,
  });
  const stack = await startStack({ AUTH_MODE: "supabase", SUPABASE_URL: auth.url }, {}, {
    verifier,
  });
  try {
    const token = await es256(auth);
    assertEquals(await handshake(stack.server.port, token), "HTTP/1.1 101 Switching Protocols");
    auth.hold();
    const forged = await Promise.all(
      Array.from({ length: 1500 }, () => es256(auth, {}, randomKid())),
    );
    const statuses: string[] = [];
    const attack = forged.map((t) =>
      handshake(stack.server.port, t).then((s) => void statuses.push(s))
    );
    await deadline(
      (async () => {
        while (statuses.length < 1450) await new Promise((r) => setTimeout(r, 10));
      })(),
      10_000,
      "the handshakes beyond the bound to be answered",
    );
    assertEquals(statuses.filter((s) => s.startsWith("HTTP/1.1 503")).length, 1450);
    assertEquals(verifier.pending, 50, "waiters are bounded");
    assertEquals(auth.waiting, 1, "one JWKS request in flight, shared by all waiters");
    // A real user's key is known: they do not queue behind the flood.
    const started = performance.now();
    const real = await TestClient.connect(stack.wsUrl, ["agent-websocket.v1", `jwt-${token}`]);
    await real.waitFor((f) => f.event === "connected", "a real user during the flood");
    const realMs = performance.now() - started;
    assert(realMs < 500, `real user waited ${realMs.toFixed(0)} ms`);
    auth.release();
    await Promise.all(attack);
    assertEquals(statuses.filter((s) => s.includes("101")).length, 50, "the 50 waiters judged");
    assertEquals(auth.fetches, 2, "warm-up plus one refresh for 1500 forged kids");
    assertEquals(auth.userCalls, 0);
    assertEquals(verifier.pending, 0);
    await real.close();
    console.log(
      `held JWKS: 1500 forged → ${auth.fetches - 1} fetch, 50 waited, 1450 × 503; ` +
        `real user ${realMs.toFixed(0)} ms`,
    );
  } finally {
    await stack.close();
    await auth.close();
  }
});

Deno.test({
  name: "attack: U+0000 and lone surrogates are refused at the frame, the store keeps writing",
  ignore: !dbAvailable,
  fn: async () => {
    const stack = await startStack({
      SESSION_STORE: "postgres",
      DATABASE_URL,
      FRAME_FLUSH_MS: "10",
    });
    const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
    try {
      const { client: a, connected: ca } = await TestClient.open(stack.wsUrl);
      const { client: b, connected: cb } = await TestClient.open(stack.wsUrl);
      // Raw JSON text: the escapes are what an attacker (or JSON.stringify) sends.
      const cases: [string, string, string | undefined][] = [
        ['{"type":"query","id":"q1","content":"a\\u0000b"}', "content", "q1"],
        ['{"type":"query","content":"hi","id":"x\\ud800"}', "id", undefined],
        [
          '{"type":"query","content":"hi","metadata":{"tags":["ok","\\udfff"]}}',
          "metadata.tags.1",
          undefined,
        ],
        ['{"type":"query","content":"hi","metadata":{"k\\u0000":1}}', "metadata", undefined],
        ['{"content":"legacy \\ud83d"}', "content", undefined],
        ['{"type":"command","name":"cancel","args":{"id":"\\u0000"}}', "args.id", undefined],
        ['{"type":"command","name":"st\\u0000ats"}', "name", undefined],
        ['{"type":"feedback","id":"q1","rating":"up","comment":"nice\\ud83d"}', "comment", "q1"],
        ['{"type":"ping","id":"\\u0000"}', "id", undefined],
      ];
      for (const [text, path, id] of cases) {
        a.send(text);
        const err = await a.next((f) => f.type === "error", text);
        assertEquals(
          [err.code, err.issues?.[0]?.path, err.id],
          ["invalid_message", path, id],
          text,
        );
        assert(/U\+0000|surrogate/.test(err.issues[0].message), err.issues[0].message);
      }
      // A well-formed pair in an escape is text like any other.
      a.send('{"type":"query","id":"smile","content":"smile \\ud83d\\ude00"}');
      assertEquals((await a.terminal("smile")).type, "response");
      const qa = a.query("good a");
      const qb = b.query("good b");
      await a.terminal(qa);
      await b.terminal(qb);
      // Both sessions' turns reach the database: nothing blocked the shared write.
      const saved = async (id: string, text: string) => {
        const [row] = await sql`select history::text as h from agent_websocket.sessions
          where id = ${id}`;
        return row?.h?.includes(text) ?? false;
      };
      await deadline(
        (async () => {
          while (!(await saved(ca.session_id, "good a") && await saved(cb.session_id, "good b"))) {
            await new Promise((r) => setTimeout(r, 20));
          }
        })(),
        5000,
        "both histories written",
      );
      assert(await saved(ca.session_id, "smile \u{1F600}"), "the emoji query is stored as sent");
      assertEquals(stack.logs.filter((l) => l.includes("store_flush_failed")).length, 0);
      await a.close();
      await b.close();
    } finally {
      await sql.end({ timeout: 1 });
      await stack.close();
    }
  },
});

/**
 * An upstream that answers the first request with `total` bytes of one
 * unfinished event (one endless line, or data lines with no blank line), and
 * any later request with a normal short answer. Counts the bytes it produced.
 */
function startOversizedUpstream(shape: "line" | "lines", total: number) {
  let produced = 0;
  let requests = 0;
  const chunk = new TextEncoder().encode(
    shape === "line" ? "a".repeat(65_536) : "data: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n".repeat(1820),
  );
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, () => {
    if (requests++ > 0) {
      const ok = { choices: [{ delta: { content: "fine" }, finish_reason: "stop" }] };
      return new Response(`data: ${JSON.stringify(ok)}\n\ndata: [DONE]\n\n`, {
        headers: { "content-type": "text/event-stream" },
      });
    }
    const head = new TextEncoder().encode(shape === "line" ? ": hi\n\ndata: " : ": hi\n\n");
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(head);
      },
      pull(c) {
        if (produced >= total) return c.close();
        produced += chunk.byteLength;
        c.enqueue(chunk.slice());
      },
    }, { highWaterMark: 0 });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  });
  return {
    url: `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`,
    get produced() {
      return produced;
    },
    close: () => server.shutdown(),
  };
}

for (
  const [shape, transport] of [
    ["line", "socket"],
    ["lines", "socket"],
    ["line", "fetch"],
    ["lines", "fetch"],
  ] as const
) {
  Deno.test(`attack: a 100 MB upstream event (${shape}, ${transport}) ends the answer at MAX_SSE_EVENT_BYTES`, async () => {
    const upstream = startOversizedUpstream(shape, 100 * 1024 * 1024);
    const stack = await startStack({
      OPENROUTER_BASE_URL: upstream.url,
      UPSTREAM_TRANSPORT: transport,
    });
    try {
      const { client } = await TestClient.open(stack.wsUrl);
      collectGarbage();
      const before = Deno.memoryUsage().rss;
      let peak = before;
      const sampler = setInterval(() => peak = Math.max(peak, Deno.memoryUsage().rss), 5);
      const id = client.query("tell me everything");
      const end = await client.terminal(id, 10_000);
      clearInterval(sampler);
      peak = Math.max(peak, Deno.memoryUsage().rss);
      assertEquals([end.type, end.code, end.retryable], ["error", "upstream_error", false]);
      assertEquals(end.message, "The model provider sent an oversized event");
      const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
      assert(
        upstream.produced < 16 * 1024 * 1024,
        `read stopped early: ${mb(upstream.produced)} MB`,
      );
      assert(peak - before < 64 * 1024 * 1024, `RSS ${mb(before)} → peak ${mb(peak)} MB`);
      // Not retried, and the session goes on.
      const next = client.query("again");
      assertEquals((await client.terminal(next)).content, "fine");
      await client.close();
      console.log(
        `oversized ${shape}: upstream produced ${mb(upstream.produced)} MB of 100; ` +
          `RSS ${mb(before)} → peak ${mb(peak)} MB`,
      );
    } finally {
      await stack.close();
      await upstream.close();
    }
  });
}

Deno.test({
  name: "attack: /notify over NOTIFY's 8000 bytes gets a JSON 413; data cannot pose as a response",
  ignore: !dbAvailable,
  fn: async () => {
    const secret = "notify-secret-for-tests-0123456789";
    const env = {
      SESSION_STORE: "postgres",
      DATABASE_URL,
      FRAME_FLUSH_MS: "10",
      NOTIFY_SECRET: secret,
    };
    const a = await startStack(env);
    const b = await startStack(env);
    try {
      const { client, connected } = await TestClient.open(a.wsUrl);
      const post = (url: string, body: Record<string, unknown>) =>
        fetch(`${url}/notify`, {
          method: "POST",
          headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
          body: JSON.stringify({ session_id: connected.session_id, ...body }),
        });
      // Forwarded once B can see the session (A writes it within a few ms).
      await deadline(
        (async () => {
          for (;;) {
            const res = await post(b.server.url, { content: "small" });
            await res.body?.cancel();
            if (res.status === 202) return;
            await new Promise((r) => setTimeout(r, 20));
          }
        })(),
        5000,
        "B to see the session",
      );
      await client.waitFor((f) => f.content === "small", "the forwarded notification");
      // 4000 × "€" passes the 4000-character bound: 12 000 bytes on the bus.
      const big = await post(b.server.url, { content: "€".repeat(4000) });
      assertEquals(big.status, 413);
      const body = await big.json();
      assertEquals(body.error, "payload_too_large");
      assert(/\d+ bytes/.test(body.message), body.message);
      assertEquals(b.logs.filter((l) => !l.startsWith("{")).length, 0, "every log line is JSON");
      // Text the store cannot hold is refused before it reaches a session.
      const nul = await post(a.server.url, { content: "a\u0000b" });
      assertEquals([nul.status, (await nul.json()).issues[0].path], [400, "content"]);
      // A frame's own fields stay the server's, locally and across processes.
      const data = { id: "q-evil", done: true, type: "response", seq: 1, event: "x", content: "y" };
      for (const stack of [a, b]) {
        const from = client.frames.length;
        const res = await post(stack.server.url, {
          event: "job_done",
          content: "ready",
          data: { ...data, job: 7 },
        });
        await res.body?.cancel();
        const note = await client.waitFor((f) => f.event === "job_done", "job_done", 3000, from);
        assertEquals(note.type, "notification");
        assertEquals([note.content, note.job, note.id, note.done], [
          "ready",
          7,
          undefined,
          undefined,
        ]);
        assert(note.seq > 1, "seq is the session's");
      }
      await client.close();
    } finally {
      await a.close();
      await b.close();
    }
  },
});

Deno.test("attack: reconnecting does not reset a user's query rate", async () => {
  const auth = await startAuthServer();
  const stack = await startStack({
    AUTH_MODE: "supabase",
    SUPABASE_URL: auth.url,
    RESUME_WINDOW_SECONDS: "0",
    RATE_LIMIT_BURST: "10",
    RATE_LIMIT_PER_MINUTE: "60",
  });
  try {
    const token = await es256(auth);
    const started = performance.now();
    let accepted = 0;
    for (let round = 0; round < 5; round++) {
      const client = await TestClient.connect(stack.wsUrl, ["agent-websocket.v1", `jwt-${token}`]);
      await client.waitFor((f) => f.event === "connected", "connected");
      const ids = Array.from({ length: 15 }, (_, i) => client.query(`q${round}.${i}`));
      const ends = await Promise.all(ids.map((id) => client.terminal(id, 5000)));
      accepted += ends.filter((f) => f.type === "response").length;
      assert(
        ends.every((f) => f.type === "response" || f.code === "rate_limited"),
        JSON.stringify(ends.filter((f) => f.type !== "response" && f.code !== "rate_limited")),
      );
      await client.close();
      await eventually(() => stack.server.app.sessions.size === 0, "the session is gone");
    }
    const seconds = (performance.now() - started) / 1000;
    // The burst once, plus one a second of refill: not 10 per reconnect.
    assert(accepted <= 10 + Math.ceil(seconds), `${accepted} accepted in ${seconds.toFixed(1)} s`);
    console.log(`5 reconnects × 15 queries: ${accepted} accepted in ${seconds.toFixed(1)} s`);
  } finally {
    await stack.close();
    await auth.close();
  }
});
