import { assert, assertEquals } from "./assert.ts";
import { eventually, type Frame, startStack, TestClient } from "./helpers.ts";

/** Runs one query against a scripted upstream and returns the client's view of it. */
async function ask(
  env: Record<string, string>,
  script: Parameters<Awaited<ReturnType<typeof startStack>>["sim"]["script"]>,
  ms = 3000,
) {
  const stack = await startStack(env);
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script(...script);
    const id = client.query("question");
    const terminal = await client.terminal(id, ms);
    // A second query proves the session still works after the failure.
    const next = client.query("again");
    const after = await client.terminal(next, ms);
    await client.close();
    const frames = client.framesOf(id);
    const terminals = frames.filter((f: Frame) => f.done === true || f.type === "error");
    assertEquals(terminals.length, 1, "exactly one terminal frame");
    return { terminal, frames, after, requests: stack.sim.requests.length - 1, logs: stack.logs };
  } finally {
    await stack.close();
  }
}

const retrying = (frames: Frame[]) => frames.filter((f) => f.state === "retrying");

Deno.test("429 with Retry-After is retried after the delay it asks for, then succeeds", async () => {
  const { terminal, frames, requests } = await ask(
    { UPSTREAM_RETRY_MAX_MS: "2000" },
    [{ kind: "http_error", status: 429, retryAfter: 1 }, { kind: "stream", tokens: ["ok"] }],
  );
  assertEquals(terminal.content, "ok");
  assertEquals(requests, 2);
  const r = retrying(frames);
  assertEquals(r.length, 1);
  assertEquals(r[0].attempt, 1);
  assertEquals(r[0].delay_ms, 1000);
  assert(terminal.timing.total_ms >= 1000, `waited ${terminal.timing.total_ms} ms`);
});

Deno.test("a Retry-After longer than the retry ceiling is passed to the client instead", async () => {
  const { terminal, requests } = await ask({}, [
    { kind: "http_error", status: 429, retryAfter: 30 },
  ]);
  assertEquals(terminal.code, "upstream_rate_limited");
  assertEquals(terminal.retryable, true);
  assertEquals(terminal.retry_after_ms, 30_000);
  assertEquals(requests, 1);
});

Deno.test("500 twice then success: two retrying statuses, one answer", async () => {
  const { terminal, frames, requests } = await ask({}, [
    { kind: "http_error", status: 500 },
    { kind: "http_error", status: 500 },
    { kind: "stream", tokens: ["fine"] },
  ]);
  assertEquals(terminal.content, "fine");
  assertEquals(requests, 3);
  assertEquals(retrying(frames).map((f) => f.attempt), [1, 2]);
});

Deno.test("retries give up after UPSTREAM_RETRIES with a retryable error", async () => {
  const { terminal, requests } = await ask({ UPSTREAM_RETRIES: "2" }, [
    { kind: "http_error", status: 503 },
    { kind: "http_error", status: 503 },
    { kind: "http_error", status: 503 },
  ]);
  assertEquals(terminal.code, "upstream_unavailable");
  assertEquals(terminal.retryable, true);
  assertEquals(requests, 3);
});

Deno.test("401 and 402 are not retried and say what is wrong", async () => {
  const a = await ask({}, [{ kind: "http_error", status: 401, message: "bad key sk-or-raw" }]);
  assertEquals(a.terminal.code, "upstream_error");
  assertEquals(a.terminal.retryable, false);
  assert(a.terminal.message.includes("API key"));
  assert(!a.terminal.message.includes("sk-or-raw"), "raw upstream body is not forwarded");
  assertEquals(a.requests, 1);
  const b = await ask({}, [{ kind: "http_error", status: 402 }]);
  assertEquals(b.terminal.code, "insufficient_credits");
  assertEquals(b.terminal.retryable, false);
  assertEquals(b.requests, 1);
});

for (
  const [shape, code] of [
    ["string_code", "upstream_error"],
    ["int_code", "upstream_unavailable"],
    ["bare", "upstream_error"],
  ] as const
) {
  Deno.test(`mid-stream error (${shape}) after tokens ends the query with one error`, async () => {
    const { terminal, frames, requests } = await ask({}, [
      { kind: "stream_error", shape, afterTokens: 3 },
    ]);
    assertEquals(terminal.type, "error");
    assertEquals(terminal.code, code);
    assertEquals(frames.filter((f) => f.delta !== undefined).length, 3);
    assert(!JSON.stringify(terminal).includes("secret-raw-body"));
    assertEquals(requests, 1, "not retried once tokens were sent");
  });
}

Deno.test("an error as the very first frame is retried like an HTTP error", async () => {
  const { terminal, frames, requests } = await ask({}, [
    { kind: "stream_error", shape: "bare", afterTokens: 0, code: 503 },
    { kind: "stream", tokens: ["recovered"] },
  ]);
  assertEquals(terminal.content, "recovered");
  assertEquals(requests, 2);
  assertEquals(retrying(frames).length, 1);
});

Deno.test("a hang before the first byte hits the first-token timeout", async () => {
  const { terminal, requests } = await ask(
    { UPSTREAM_FIRST_TOKEN_TIMEOUT_SECONDS: "0.2", UPSTREAM_RETRIES: "1" },
    [{ kind: "hang" }, { kind: "hang" }],
  );
  assertEquals(terminal.code, "upstream_timeout");
  assertEquals(terminal.retryable, true);
  assertEquals(requests, 2);
});

Deno.test("a stall mid-stream hits the total timeout after the partial answer", async () => {
  const { terminal, frames } = await ask({ UPSTREAM_TOTAL_TIMEOUT_SECONDS: "0.3" }, [
    { kind: "stall", afterTokens: 2 },
  ]);
  assertEquals(terminal.code, "upstream_timeout");
  assertEquals(frames.filter((f) => f.delta !== undefined).length, 2);
});

Deno.test("a connection dropped mid-stream ends the query with upstream_unavailable", async () => {
  const { terminal, requests } = await ask({}, [{ kind: "drop", afterTokens: 2 }]);
  assertEquals(terminal.code, "upstream_unavailable");
  assertEquals(terminal.retryable, true);
  assertEquals(requests, 1);
});

Deno.test("a stream that just ends without a finish reason is an error, not a short answer", async () => {
  const { terminal } = await ask({}, [{ kind: "stream", tokens: ["half"], endAbruptly: true }]);
  assertEquals(terminal.code, "upstream_unavailable");
});

Deno.test("an unreachable upstream is retried, then reported as unavailable", async () => {
  const stack = await startStack({ OPENROUTER_BASE_URL: "http://127.0.0.1:9/api/v1" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    const id = client.query("anyone?");
    const t = await client.terminal(id);
    assertEquals(t.code, "upstream_unavailable");
    assertEquals(client.framesOf(id).filter((f) => f.state === "retrying").length, 2);
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("with no resume window, closing the socket aborts upstream and frees the session", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "0" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script({ kind: "stream", tokens: Array(200).fill("tok "), gapMs: 20 });
    const id = client.query("long one");
    await client.waitFor((f) => f.id === id && f.delta !== undefined, "first delta");
    assertEquals(stack.sim.openStreams, 1);
    await client.close();
    await eventually(() => stack.sim.openStreams === 0, "upstream stream closed");
    await eventually(() => stack.server.app.sessions.size === 0, "session freed");
  } finally {
    await stack.close();
  }
});
