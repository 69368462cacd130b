import { assert, assertEquals } from "./assert.ts";
import { eventually, isTerminal, startStack, TestClient } from "./helpers.ts";

Deno.test("three queued queries are answered one at a time, in order", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script(
      { kind: "stream", tokens: ["first"], gapMs: 10 },
      { kind: "stream", tokens: ["second"] },
      { kind: "stream", tokens: ["third"] },
    );
    const ids = [client.query("1"), client.query("2"), client.query("3")];
    for (const id of ids) await client.terminal(id);
    const queued = client.frames.filter((f) => f.state === "queued");
    assertEquals(queued.map((f) => [f.id, f.position]), [[ids[1], 1], [ids[2], 2]]);
    const finals = client.frames.filter(isTerminal);
    assertEquals(finals.map((f) => f.id), ids);
    assertEquals(finals.map((f) => f.content), ["first", "second", "third"]);
    // The second query's thinking status comes after the first query's final frame.
    const firstDone = client.frames.indexOf(finals[0]);
    const secondThinking = client.frames.findIndex((f) =>
      f.id === ids[1] && f.state === "thinking"
    );
    assert(secondThinking > firstDone, "queries do not overlap");
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("cancel mid-stream ends the query with the partial text and aborts upstream", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script({ kind: "stream", tokens: Array(500).fill("w "), gapMs: 10 });
    const id = client.query("talk a lot");
    await client.waitFor((f) => f.id === id && f.delta !== undefined, "a delta");
    client.send({ type: "command", name: "cancel", id: "c1" });
    const final = await client.terminal(id);
    const ack = await client.waitFor((f) => f.event === "cancelled", "cancel ack");
    assertEquals(ack.id, "c1");
    assertEquals(ack.query_id, id);
    assertEquals(final.finish_reason, "cancelled");
    const streamed = client.framesOf(id).filter((f) => f.delta !== undefined).map((f) => f.delta);
    assertEquals(final.content, streamed.join(""));
    assert(streamed.length < 500);
    assertEquals(client.framesOf(id).filter(isTerminal).length, 1);
    await eventually(() => stack.sim.openStreams === 0, "upstream aborted");
    // The session keeps working.
    stack.sim.script({ kind: "stream", tokens: ["still here"] });
    assertEquals((await client.terminal(client.query("hello?"))).content, "still here");
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("cancel of a queued query removes it with its terminal frame; the rest run", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script(
      { kind: "stream", tokens: ["a", "b", "c"], gapMs: 30 },
      { kind: "stream", tokens: ["third"] },
    );
    const first = client.query("1");
    const second = client.query("2");
    const third = client.query("3");
    await client.waitFor((f) => f.id === third && f.state === "queued", "queued");
    client.send({ type: "command", name: "cancel", id: "c2", args: { id: second } });
    const cancelled = await client.terminal(second);
    assertEquals(cancelled.finish_reason, "cancelled");
    assertEquals(cancelled.content, "");
    assertEquals((await client.terminal(first)).content, "abc");
    assertEquals((await client.terminal(third)).content, "third");
    assertEquals(stack.sim.requests.length, 2, "the cancelled query never reached upstream");
    assertEquals(client.framesOf(second).filter(isTerminal).length, 1);
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("cancel of an unknown query is a not_found error", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    client.send({ type: "command", name: "cancel", id: "c3", args: { id: "nope" } });
    const err = await client.next((f) => f.type === "error", "error");
    assertEquals([err.code, err.id], ["not_found", "c3"]);
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("ping is answered at once while a query streams", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script({ kind: "stream", tokens: Array(50).fill("t "), gapMs: 10 });
    const id = client.query("stream for a while");
    await client.waitFor((f) => f.id === id && f.delta !== undefined, "a delta");
    client.send({ type: "ping", id: "p1" });
    const pong = await client.next((f) => f.type === "pong", "pong");
    assertEquals(pong.id, "p1");
    const final = await client.terminal(id);
    assert(pong.seq < final.seq, "pong came before the answer finished");
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("reset clears history; stats counts; feedback is kept; unknown commands are refused", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    const id = client.query("remember me");
    await client.terminal(id);
    client.send({ type: "feedback", id, rating: "up", comment: "nice" });
    const fb = await client.next((f) => f.event === "feedback_received", "feedback ack");
    assertEquals([fb.id, fb.rating], [id, "up"]);
    client.send({ type: "feedback", id: "never-asked", rating: "down" });
    assertEquals((await client.next((f) => f.type === "error", "error")).code, "not_found");
    client.send({ type: "command", name: "stats", id: "s1" });
    const stats = await client.next((f) => f.event === "stats", "stats");
    assertEquals([stats.id, stats.queries, stats.responses, stats.feedback], ["s1", 1, 1, 1]);
    client.send({ type: "command", name: "reset", id: "r1" });
    assertEquals((await client.next((f) => f.event === "reset", "reset")).id, "r1");
    client.send({ type: "command", name: "history" });
    assertEquals((await client.next((f) => f.event === "history", "history")).messages, []);
    await client.terminal(client.query("fresh start"));
    assertEquals(stack.sim.requests.at(-1)!.body.messages!.length, 2, "system + new question only");
    client.send({ type: "command", name: "dance", id: "d1" });
    const err = await client.next((f) => f.type === "error", "error");
    assertEquals([err.code, err.id], ["unknown_command", "d1"]);
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("a full queue answers queue_full; a disallowed model answers model_not_allowed", async () => {
  const stack = await startStack({ MAX_QUEUE: "1", ALLOWED_MODELS: "a/one,b/two", MODEL: "a/one" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script({ kind: "stream", tokens: ["x", "y"], gapMs: 30 });
    const a = client.query("1");
    const b = client.query("2", { model: "b/two" });
    const c = client.query("3");
    const full = await client.terminal(c);
    assertEquals([full.code, full.retryable], ["queue_full", true]);
    const d = client.query("4", { model: "evil/expensive" });
    assertEquals((await client.terminal(d)).code, "model_not_allowed");
    await client.terminal(a);
    await client.terminal(b);
    assertEquals(stack.sim.requests[1].body.model, "b/two");
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("queries beyond the rate limit get rate_limited with retry_after_ms", async () => {
  const stack = await startStack({ RATE_LIMIT_BURST: "2", RATE_LIMIT_PER_MINUTE: "6" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    const ids = [client.query("1"), client.query("2"), client.query("3")];
    const third = await client.terminal(ids[2]);
    assertEquals(third.code, "rate_limited");
    assertEquals(third.retryable, true);
    assert(third.retry_after_ms > 0 && third.retry_after_ms <= 10_000, `${third.retry_after_ms}`);
    await client.terminal(ids[0]);
    await client.terminal(ids[1]);
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("an idle session is swept with session_timeout and close 1000", async () => {
  const stack = await startStack({ SESSION_TIMEOUT: "0.005", SWEEP_INTERVAL_SECONDS: "0.05" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    const note = await client.next((f) => f.event === "session_timeout", "timeout", 3000);
    assertEquals(note.content, "Session closed due to inactivity");
    const close = await client.closed;
    assertEquals([close.code, close.reason], [1000, "Session timeout"]);
    assertEquals(stack.server.app.sessions.size, 0);
  } finally {
    await stack.close();
  }
});

Deno.test("a busy session is not swept while its answer streams", async () => {
  const stack = await startStack({ SESSION_TIMEOUT: "0.002", SWEEP_INTERVAL_SECONDS: "0.02" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script({ kind: "stream", tokens: Array(30).fill("z"), gapMs: 15 });
    const id = client.query("long");
    const final = await client.terminal(id);
    assertEquals(final.content, "z".repeat(30));
    await client.closed;
  } finally {
    await stack.close();
  }
});

Deno.test("sockets older than MAX_CONNECTION_AGE_SECONDS get shutdown and close 1012", async () => {
  const stack = await startStack({
    MAX_CONNECTION_AGE_SECONDS: "0.1",
    SWEEP_INTERVAL_SECONDS: "0.02",
  });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    const note = await client.next((f) => f.event === "shutdown", "shutdown");
    assertEquals([note.reason, note.reconnect], ["max_connection_age", true]);
    assertEquals((await client.closed).code, 1012);
  } finally {
    await stack.close();
  }
});

Deno.test("server shutdown tells every client to reconnect and closes with 1012", async () => {
  const stack = await startStack();
  const { client } = await TestClient.open(stack.wsUrl);
  const { client: other } = await TestClient.open(stack.wsUrl);
  await stack.close();
  for (const c of [client, other]) {
    assertEquals((await c.closed).code, 1012);
    const note = c.frames.find((f) => f.event === "shutdown");
    assertEquals(note?.reconnect, true);
  }
});

Deno.test("without OPENROUTER_API_KEY every query gets not_configured, never a fake answer", async () => {
  const stack = await startStack({ OPENROUTER_API_KEY: "" });
  try {
    const { client, connected } = await TestClient.open(stack.wsUrl);
    assert(connected.content.includes("NOT CONFIGURED"));
    const t = await client.terminal(client.query("hello"));
    assertEquals([t.type, t.code, t.retryable], ["error", "not_configured", false]);
    assertEquals(stack.sim.requests.length, 0);
    await client.close();
  } finally {
    await stack.close();
  }
});
