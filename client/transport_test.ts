import { AgentError } from "./errors.ts";
import { CLOSE } from "./protocol.ts";
import { ReconnectingTransport } from "./transport.ts";

function assertEquals<T>(actual: T, expected: T, what = "") {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  if (a !== e) throw new Error(`${what ? `${what}: ` : ""}expected ${e}, got ${a}`);
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A WebSocket server on loopback; `onSocket` plays each connection's part. */
function serve(onSocket: (ws: WebSocket, protocols: string[]) => void) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const offered = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) =>
      p.trim()
    ).filter(Boolean);
    const { socket, response } = Deno.upgradeWebSocket(req);
    onSocket(socket, offered);
    return response;
  });
  return { url: `ws://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

const FAST = { reconnect: { initialDelayMs: 10, maxDelayMs: 20, maxAttempts: 5 } };

Deno.test("transport: a 4003 close fetches a fresh token and reconnects with it", async () => {
  const seen: string[] = [];
  const server = serve((ws, protocols) => {
    seen.push(protocols.find((p) => p.startsWith("jwt-")) ?? "none");
    // The first token "expires" as soon as the socket is open.
    if (seen.length === 1) ws.onopen = () => ws.close(CLOSE.tokenExpired, "Token expired");
  });
  let n = 0;
  const t = new ReconnectingTransport(server.url, { ...FAST, token: () => `jwt${++n}` });
  try {
    const closes: number[] = [];
    t.on("close", (e) => closes.push(e.code));
    let opens = 0;
    const reopened = new Promise((r) => t.on("open", () => ++opens === 2 && r(undefined)));
    await within(t.connect(), 3000, "first open");
    await within(reopened, 3000, "open after the token expired");
    assertEquals(closes, [CLOSE.tokenExpired]);
    assertEquals(seen, ["jwt-jwt1", "jwt-jwt2"], "the token provider ran again");
    assertEquals(t.state, "open");
  } finally {
    t.close();
    await server.close();
  }
});

Deno.test("transport: a fixed token cannot be renewed, so 4003 stops with token_expired", async () => {
  const server = serve((ws) => ws.onopen = () => ws.close(CLOSE.tokenExpired, "Token expired"));
  const t = new ReconnectingTransport(server.url, { ...FAST, token: "fixed" });
  try {
    let reconnects = 0;
    t.on("reconnecting", () => reconnects++);
    const stopped = new Promise<AgentError>((r) => t.on("stop", r));
    await within(t.connect(), 3000, "open");
    const err = await within(stopped, 3000, "stop");
    assertEquals([err.code, reconnects, t.state], ["token_expired", 0, "closed"]);
  } finally {
    t.close();
    await server.close();
  }
});

Deno.test("transport: frames sent before connect wait in the queue and go out in order", async () => {
  const got: string[] = [];
  let done!: () => void;
  const all = new Promise<void>((r) => done = r);
  const server = serve((ws) =>
    ws.onmessage = (e) => {
      got.push(String(e.data));
      if (got.length === 3) done();
    }
  );
  const t = new ReconnectingTransport(server.url, { ...FAST, maxOfflineQueue: 3 });
  try {
    for (const x of ["a", "b", "c"]) t.send(x);
    const full = (() => {
      try {
        t.send("d");
      } catch (e) {
        return e instanceof AgentError ? e.code : String(e);
      }
    })();
    assertEquals(full, "offline_queue_full");
    await within(t.connect(), 3000, "open");
    await within(all, 3000, "three frames");
    assertEquals(got, ["a", "b", "c"]);
  } finally {
    t.close();
    await server.close();
  }
});

Deno.test("transport: a handshake that never comes times out, and attempts are bounded", async () => {
  let sockets = 0;
  const server = serve(() => sockets++); // accepts, then says nothing
  const t = new ReconnectingTransport(server.url, {
    reconnect: { initialDelayMs: 10, maxDelayMs: 20, maxAttempts: 2 },
    connectTimeoutMs: 100,
  }, { handshake: true });
  try {
    const err = await within(t.connect().then(() => null, (e) => e), 3000, "give up");
    assertEquals([err?.code, sockets], ["reconnect_failed", 3]);
  } finally {
    t.close();
    await server.close();
  }
});
