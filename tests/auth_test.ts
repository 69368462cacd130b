import type { JWTPayload } from "jose";
import { assert, assertEquals } from "./assert.ts";
import { eventually, type Stack, startStack, TestClient } from "./helpers.ts";
import {
  type AuthServer,
  claims,
  es256,
  hs256 as signHs256,
  startAuthServer,
} from "./auth_server.ts";
import {
  createSupabaseVerifier,
  type SupabaseAuthOptions,
} from "../supabase/functions/_shared/platform/auth.ts";

const HS_SECRET = "legacy-hs256-secret-for-tests-only-0123456789";

type Jwks = AuthServer;

function hs256(jwks: Jwks, over: JWTPayload = {}, secret = HS_SECRET): Promise<string> {
  return signHs256(jwks, secret, over);
}

const b64url = (v: unknown) =>
  btoa(JSON.stringify(v)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");

async function withAuth(fn: (stack: Stack, jwks: Jwks) => Promise<void>, env = {}) {
  const jwks = await startAuthServer();
  const stack = await startStack({
    AUTH_MODE: "supabase",
    SUPABASE_URL: jwks.url,
    SUPABASE_JWT_SECRET: HS_SECRET,
    RESUME_WINDOW_SECONDS: "5",
    ...env,
  });
  try {
    await fn(stack, jwks);
  } finally {
    await stack.close();
    await jwks.close();
  }
}

/** Connects with the token as a subprotocol, the way a browser would. */
function connectWith(stack: Stack, token: string, query = "") {
  return TestClient.connect(stack.wsUrl + query, ["agent-websocket.v1", `jwt-${token}`]);
}

async function expectRefused(stack: Stack, token: string, what: string) {
  const client = await connectWith(stack, token);
  const close = await client.closed;
  assertEquals(close.code, 4001, what);
  assertEquals(client.frames.map((f) => [f.type, f.code]), [["error", "unauthorized"]], what);
  assertEquals(client.frames.some((f) => f.event === "connected"), false, `${what}: no session`);
}

Deno.test("auth: a valid ES256 token is served; the token subprotocol is never echoed", async () => {
  await withAuth(async (stack, jwks) => {
    const client = await connectWith(stack, await es256(jwks));
    assertEquals(client.ws.protocol, "agent-websocket.v1");
    await client.waitFor((f) => f.event === "connected", "connected");
    const t = await client.terminal(client.query("who am I?"));
    assertEquals(t.type, "response");
    const user = stack.sim.requests[0].body.user!;
    assert(/^u_[0-9a-f]{32}$/.test(user), `hashed user id upstream: ${user}`);
    assert(!JSON.stringify(stack.sim.requests[0].body).includes("user-1"), "raw sub not sent");
    // The JWKS is fetched once and cached.
    const second = await connectWith(stack, await es256(jwks));
    await second.waitFor((f) => f.event === "connected", "connected");
    assertEquals(jwks.fetches, 1);
    await client.close();
    await second.close();
  });
});

Deno.test("auth: legacy HS256 tokens and the ?jwt= form are accepted", async () => {
  await withAuth(async (stack, jwks) => {
    const token = await hs256(jwks);
    const client = await TestClient.connect(`${stack.wsUrl}?jwt=${token}`);
    await client.waitFor((f) => f.event === "connected", "connected");
    await client.close();
  });
});

Deno.test("auth: the legacy HS256 secret is read from JWT_SECRET, the name hosted Supabase allows", async () => {
  await withAuth(async (stack, jwks) => {
    const client = await connectWith(stack, await hs256(jwks));
    await client.waitFor((f) => f.event === "connected", "connected");
    await client.close();
    await expectRefused(stack, await hs256(jwks, {}, "another-secret-0123456789abcdef"), "wrong");
  }, { SUPABASE_JWT_SECRET: "", JWT_SECRET: HS_SECRET });
});

Deno.test("auth: bad tokens are refused with 4001, no session and no upstream call", async () => {
  await withAuth(async (stack, jwks) => {
    const now = Math.floor(Date.now() / 1000);
    const valid = await es256(jwks);
    const [h, p, s] = valid.split(".");
    const tampered = `${h}.${b64url({ ...claims(jwks), sub: "someone-else" })}.${s}`;
    const none = `${b64url({ alg: "none", typ: "JWT" })}.${p}.`;
    const cases: [string, string][] = [
      ["expired", await es256(jwks, { exp: now - 120 })],
      ["not yet valid", await es256(jwks, { nbf: now + 600 })],
      ["wrong issuer", await es256(jwks, { iss: "https://evil.example/auth/v1" })],
      ["wrong audience", await es256(jwks, { aud: "anon" })],
      ["tampered payload", tampered],
      ["alg none", none],
      ["unknown kid", await es256(jwks, {}, "key-unknown")],
      ["HS256 with the wrong secret", await hs256(jwks, {}, "x".repeat(40))],
      ["garbage", "not-a-token"],
      ["three garbage parts", "a.b.c"],
    ];
    for (const [what, token] of cases) await expectRefused(stack, token, what);
    // No token at all.
    const bare = await TestClient.connect(stack.wsUrl);
    assertEquals((await bare.closed).code, 4001);
    assertEquals(stack.sim.requests.length, 0);
    assertEquals(stack.server.app.sessions.size, 0);
    assert(!stack.logs.join("\n").includes(valid.split(".")[2]), "tokens are not logged");
  });
});

Deno.test("auth: only the same user may resume a session", async () => {
  await withAuth(async (stack, jwks) => {
    const alice = await connectWith(stack, await es256(jwks, { sub: "alice" }));
    const connected = await alice.waitFor((f) => f.event === "connected", "connected");
    await alice.close();
    const query = `?session_id=${connected.session_id}&last_seq=1`;
    const mallory = await connectWith(stack, await es256(jwks, { sub: "mallory" }), query);
    const err = await mallory.waitFor((f) => f.type === "error", "refusal");
    assertEquals(err.code, "not_found");
    const fresh = mallory.frames.find((f) => f.event === "connected")!;
    assert(fresh.session_id !== connected.session_id);
    const back = await connectWith(stack, await es256(jwks, { sub: "alice" }), query);
    await back.waitFor((f) => f.event === "resumed", "resumed");
    await mallory.close();
    await back.close();
  });
});

Deno.test("auth: connections beyond MAX_CONNECTIONS_PER_USER are closed with 4029", async () => {
  await withAuth(async (stack, jwks) => {
    const token = await es256(jwks);
    const a = await connectWith(stack, token);
    const b = await connectWith(stack, token);
    const aId = (await a.waitFor((f) => f.event === "connected", "a")).session_id;
    await b.waitFor((f) => f.event === "connected", "b");
    const c = await connectWith(stack, token);
    assertEquals((await c.closed).code, 4029);
    assertEquals(c.frames[0].code, "too_many_connections");
    // Another user is not affected, and a freed slot can be used again.
    const other = await connectWith(stack, await es256(jwks, { sub: "user-2" }));
    await other.waitFor((f) => f.event === "connected", "other user");
    await a.close();
    await eventually(
      () => stack.server.app.sessions.get(aId)?.socket === null,
      "server saw the close",
    );
    const d = await connectWith(stack, token);
    await d.waitFor((f) => f.event === "connected", "slot reused");
    for (const x of [b, other, d]) await x.close();
  }, { MAX_CONNECTIONS_PER_USER: "2" });
});

/** Sends a raw handshake so the test can set Origin, and returns the status line. */
async function handshake(port: number, origin: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const request = [
    "GET / HTTP/1.1",
    `Host: 127.0.0.1:${port}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    `Origin: ${origin}`,
    "",
    "",
  ].join("\r\n");
  await conn.write(new TextEncoder().encode(request));
  const buf = new Uint8Array(1024);
  const n = await conn.read(buf);
  conn.close();
  return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
}

Deno.test("limits: origins outside ALLOWED_ORIGINS are refused before the upgrade", async () => {
  const stack = await startStack({ ALLOWED_ORIGINS: "https://app.example.com" });
  try {
    assertEquals(
      await handshake(stack.server.port, "https://evil.example.com"),
      "HTTP/1.1 403 Forbidden",
    );
    assertEquals(
      await handshake(stack.server.port, "https://app.example.com"),
      "HTTP/1.1 101 Switching Protocols",
    );
    await eventually(() => stack.server.app.sessions.size <= 1, "handshake socket counted");
  } finally {
    await stack.close();
  }
});

Deno.test("limits: beyond MAX_CONNECTIONS new sockets get 503", async () => {
  const stack = await startStack({ MAX_CONNECTIONS: "2" });
  try {
    const { client: a } = await TestClient.open(stack.wsUrl);
    const { client: b } = await TestClient.open(stack.wsUrl);
    const res = await fetch(stack.server.url, {
      headers: {
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
      },
    });
    assertEquals(res.status, 503);
    await res.body?.cancel();
    await a.close();
    await b.close();
  } finally {
    await stack.close();
  }
});

Deno.test("auth: ES256 and HS256 get the same 30 s clock leeway", async () => {
  await withAuth(async (stack, jwks) => {
    const now = Math.floor(Date.now() / 1000);
    for (const sign of [es256, hs256]) {
      const late = await connectWith(stack, await sign(jwks, { exp: now - 10 }));
      await late.waitFor((f) => f.event === "connected", `${sign.name}: 10 s late is tolerated`);
      await late.close();
      await expectRefused(stack, await sign(jwks, { exp: now - 60 }), `${sign.name}: 60 s late`);
      const early = await connectWith(stack, await sign(jwks, { nbf: now + 10 }));
      await early.waitFor((f) => f.event === "connected", `${sign.name}: 10 s early is tolerated`);
      await early.close();
    }
  });
});

function verifierFor(jwks: Jwks, over: Partial<SupabaseAuthOptions> = {}) {
  return createSupabaseVerifier({
    supabaseUrl: jwks.url,
    issuer: `${jwks.url}/auth/v1`,
    audience: "authenticated",
    jwtSecret: HS_SECRET,
    ...over,
  });
}

Deno.test("auth: a verified user carries the token's expiry and every claim", async () => {
  const jwks = await startAuthServer();
  try {
    const exp = Math.floor(Date.now() / 1000) + 90;
    const extra = { exp, app_metadata: { plan: "pro" }, email: "a@example.com" };
    for (const token of [await es256(jwks, extra), await hs256(jwks, extra)]) {
      const r = await verifierFor(jwks).verify(token);
      assert(r.ok, JSON.stringify(r));
      assertEquals(r.user.id, "user-1");
      assertEquals(r.user.role, "authenticated");
      assertEquals(r.user.expiresAt, exp * 1000);
      assertEquals(r.user.claims.app_metadata, { plan: "pro" });
      assertEquals(r.user.claims.email, "a@example.com");
    }
  } finally {
    await jwks.close();
  }
});

Deno.test("auth: a JWKS that is down is asked once per backoff, and the client may retry", async () => {
  const jwks = await startAuthServer();
  try {
    jwks.failWith(500);
    const verifier = verifierFor(jwks);
    const token = await es256(jwks);
    for (let i = 0; i < 20; i++) {
      const r = await verifier.verify(token);
      assertEquals([r.ok, !r.ok && r.retryable], [false, true], "not judged: retryable");
    }
    assertEquals(jwks.fetches, 1, "one fetch for 20 handshakes while it is down");
    assertEquals(jwks.userCalls, 0);
    // Through the server: 503 (try again), not 4001 (bad token).
    const stack = await startStack({ AUTH_MODE: "supabase", SUPABASE_URL: jwks.url }, {}, {
      verifier: verifierFor(jwks, { failureBackoffMs: 0 }),
    });
    try {
      const res = await fetch(stack.server.url, {
        headers: {
          upgrade: "websocket",
          connection: "Upgrade",
          "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
          "sec-websocket-version": "13",
          "sec-websocket-protocol": `agent-websocket.v1, jwt-${token}`,
        },
      });
      assertEquals([res.status, res.headers.get("retry-after")], [503, "1"]);
      await res.body?.cancel();
      jwks.failWith(null);
      const back = await connectWith(stack, token);
      await back.waitFor((f) => f.event === "connected", "served once the JWKS is back");
      await back.close();
    } finally {
      await stack.close();
    }
  } finally {
    await jwks.close();
  }
});

Deno.test("auth: a verification waits for a held JWKS at most timeoutMs", async () => {
  const jwks = await startAuthServer();
  try {
    jwks.hold();
    const verifier = verifierFor(jwks, { timeoutMs: 200 });
    const started = performance.now();
    const results = await Promise.all(
      Array.from({ length: 5 }, async () => verifier.verify(await es256(jwks))),
    );
    const waited = performance.now() - started;
    for (const r of results) {
      assert(!r.ok && r.retryable && /timeout/i.test(r.reason), JSON.stringify(r));
    }
    assert(waited < 1000, `waited ${waited.toFixed(0)} ms`);
    assertEquals(verifier.pending, 0, "slots given back");
    assertEquals(jwks.fetches, 1);
  } finally {
    await jwks.close();
  }
});
