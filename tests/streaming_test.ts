import { assert, assertEquals, assertExists } from "./assert.ts";
import { assertGapless, startStack, TestClient } from "./helpers.ts";

Deno.test("connected notification names the session, protocol and limits", async () => {
  const stack = await startStack({ MAX_QUEUE: "7", MAX_CONTENT_CHARS: "500" });
  try {
    const { client, connected } = await TestClient.open(stack.wsUrl);
    assertEquals(connected.type, "notification");
    assertEquals(connected.seq, 1);
    assertEquals(connected.protocol, 1);
    assert(connected.content.startsWith("Connected to Agent WebSocket. Session ID: "));
    assert(connected.content.includes(connected.session_id));
    assertEquals(connected.limits.max_queue, 7);
    assertEquals(connected.limits.max_content_chars, 500);
    assertEquals(connected.model, stack.config.model);
    assertEquals(typeof connected.heartbeat_ms, "number");
    assert(!Number.isNaN(Date.parse(connected.timestamp)));
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("a query streams thinking, deltas, then one final response with usage and timing", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script({
      kind: "stream",
      tokens: ["Hel", "lo", ", ", "world"],
      firstTokenDelayMs: 150,
    });
    const id = client.query("Say hello");
    const final = await client.terminal(id);
    const frames = client.framesOf(id);
    assertEquals(frames[0].type, "status");
    assertEquals(frames[0].state, "thinking");
    assertEquals(frames[0].content, "Thinking...");
    const deltas = frames.filter((f) => f.type === "response" && !f.done).map((f) => f.delta);
    assertEquals(deltas, ["Hel", "lo", ", ", "world"]);
    assertEquals(final.type, "response");
    assertEquals(final.content, "Hello, world");
    assertEquals(final.finish_reason, "stop");
    assertEquals(final.usage.completion_tokens, 4);
    assertEquals(typeof final.usage.cost, "number");
    assert(
      final.timing.first_token_ms >= 100,
      `first token after keep-alives: ${final.timing.first_token_ms}`,
    );
    assert(final.timing.total_ms >= final.timing.first_token_ms);
    assertEquals(frames.filter((f) => f.done === true || f.type === "error").length, 1);
    assertGapless(client.frames);
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("usage in the finish chunk, a missing [DONE], and the older {content} shape all work", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script(
      { kind: "stream", tokens: ["a", "b"], usage: "with_choices" },
      { kind: "stream", tokens: ["c"], omitDone: true, finishReason: "length" },
    );
    const a = client.query("one");
    assertEquals((await client.terminal(a)).usage.completion_tokens, 2);
    client.send({ content: "two", id: "legacy-1" });
    const b = await client.terminal("legacy-1");
    assertEquals(b.content, "c");
    assertEquals(b.finish_reason, "length");
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("stream: false sends only the final frame", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script({ kind: "stream", tokens: ["x", "y", "z"] });
    const id = client.query("quiet please", { stream: false });
    const final = await client.terminal(id);
    assertEquals(final.content, "xyz");
    const types = client.framesOf(id).map((f) => `${f.type}:${f.state ?? f.done}`);
    assertEquals(types, ["status:thinking", "response:true"]);
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("malformed SSE lines and chunks split mid-line are tolerated", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script({ kind: "stream", tokens: ["al", "pha", " beta"], malformed: true });
    const id = client.query("garbage in");
    const final = await client.terminal(id);
    assertEquals(final.type, "response");
    assertEquals(final.content, "alpha beta");
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("history is capped at MAX_HISTORY and sent upstream with the system prompt", async () => {
  const stack = await startStack({ MAX_HISTORY: "4", SYSTEM_PROMPT: "Be terse." });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    for (let i = 1; i <= 4; i++) {
      stack.sim.script({ kind: "stream", tokens: [`answer ${i}`] });
      await client.terminal(client.query(`question ${i}`));
    }
    const last = stack.sim.requests.at(-1)!.body;
    assertEquals(last.messages, [
      { role: "system", content: "Be terse." },
      { role: "user", content: "question 2" },
      { role: "assistant", content: "answer 2" },
      { role: "user", content: "question 3" },
      { role: "assistant", content: "answer 3" },
      { role: "user", content: "question 4" },
    ]);
    assertEquals(last.stream, true);
    assertEquals(last.stream_options, { include_usage: true });
    assertEquals(last.temperature, 0.7);
    assertEquals(last.max_tokens, 1500);
    client.send({ type: "command", name: "history", id: "h1" });
    const history = await client.waitFor((f) => f.event === "history", "history");
    assertEquals(history.messages.length, 4);
    assertEquals(history.messages.at(-1), { role: "assistant", content: "answer 4" });
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("fallback models and attribution headers are sent to OpenRouter", async () => {
  const stack = await startStack({
    MODEL: "openai/gpt-4o-mini",
    FALLBACK_MODELS: "anthropic/claude-3.5-haiku, google/gemini-flash-1.5",
    APP_URL: "https://example.com",
    APP_TITLE: "My App",
  });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    await client.terminal(client.query("hi"));
    const req = stack.sim.requests[0];
    assertEquals(req.body.model, "openai/gpt-4o-mini");
    assertEquals(req.body.models, [
      "openai/gpt-4o-mini",
      "anthropic/claude-3.5-haiku",
      "google/gemini-flash-1.5",
    ]);
    assertEquals(req.headers.get("http-referer"), "https://example.com");
    assertEquals(req.headers.get("x-title"), "My App");
    assertExists(req.headers.get("authorization"));
    await client.close();
  } finally {
    await stack.close();
  }
});
