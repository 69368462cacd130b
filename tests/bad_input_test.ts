import { assertEquals } from "./assert.ts";
import { startStack, TEST_API_KEY, TestClient } from "./helpers.ts";

const BAD: [string, unknown, string][] = [
  ["invalid JSON", "{not json", "invalid_json"],
  ["a JSON array", "[1,2,3]", "invalid_message"],
  ["a JSON string", '"hello"', "invalid_message"],
  ["null", "null", "invalid_message"],
  ["unknown type", { type: "launch_missiles" }, "invalid_message"],
  ["missing type and content", { hello: "world" }, "invalid_message"],
  ["query without content", { type: "query" }, "content_required"],
  ["query with numeric content", { type: "query", content: 42 }, "content_required"],
  ["query with blank content", { type: "query", content: "   " }, "content_required"],
  [
    "query with wrong stream type",
    { type: "query", content: "x", stream: "yes" },
    "invalid_message",
  ],
  ["query id too long", { type: "query", content: "x", id: "i".repeat(200) }, "invalid_message"],
  ["content too long", { type: "query", content: "x".repeat(2001) }, "message_too_large"],
  ["frame too large", { type: "ping", pad: "p".repeat(70_000) }, "message_too_large"],
  ["binary frame", new Uint8Array([1, 2, 3]), "unsupported_frame"],
  ["command without name", { type: "command" }, "invalid_message"],
  ["feedback with bad rating", { type: "feedback", id: "x", rating: "meh" }, "invalid_message"],
  [
    "__proto__ keys",
    '{"type":"query","content":"x","__proto__":{"polluted":true},"model":7}',
    "invalid_message",
  ],
];

Deno.test("every bad frame gets exactly one error frame and the socket keeps working", async () => {
  const stack = await startStack({ MAX_CONTENT_CHARS: "2000", MAX_MESSAGE_BYTES: "65536" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    for (const [name, frame, code] of BAD) {
      const before = client.frames.length;
      client.send(frame);
      client.send({ type: "ping", id: name });
      const pong = await client.next(
        (f) => f.type === "pong" && f.id === name,
        `pong after ${name}`,
      );
      const between = client.frames.slice(before, client.frames.indexOf(pong));
      assertEquals(between.map((f) => f.type), ["error"], name);
      assertEquals(between[0].code, code, name);
      assertEquals(typeof between[0].message, "string");
      assertEquals(between[0].retryable, false, name);
    }
    const invalid = client.frames.find((f) => f.code === "invalid_message" && f.issues);
    assertEquals(typeof invalid?.issues[0].message, "string");
    assertEquals(({} as Record<string, unknown>).polluted, undefined);
    // After all that, the session still answers.
    const t = await client.terminal(client.query("still alive?"));
    assertEquals(t.type, "response");
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("the API key never appears in a frame or a log line", async () => {
  const stack = await startStack({ LOG_LEVEL: "debug" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script(
      { kind: "http_error", status: 401, message: `invalid key ${TEST_API_KEY}` },
      { kind: "stream_error", shape: "int_code", afterTokens: 1 },
      { kind: "http_error", status: 500, message: TEST_API_KEY },
    );
    await client.terminal(client.query("a"));
    await client.terminal(client.query("b"));
    await client.terminal(client.query("c"));
    client.send({ type: "command", name: "stats" });
    await client.next((f) => f.event === "stats", "stats");
    await client.close();
    const everything = JSON.stringify(client.frames) + stack.logs.join("\n");
    assertEquals(everything.includes(TEST_API_KEY), false);
    assertEquals(everything.includes("TEST-SECRET"), false);
    // Logs are one JSON object per line.
    for (const line of stack.logs) JSON.parse(line);
  } finally {
    await stack.close();
  }
});
