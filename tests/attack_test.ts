/**
 * Issue 11, attacks as an attacker or a buggy peer would run them, against
 * the real server: forged token floods, a slow key server, an oversized
 * upstream event, text the database cannot store, an oversized /notify.
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import { deadline, startStack, TestClient } from "./helpers.ts";
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
