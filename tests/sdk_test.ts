import { AgentClient, AgentError } from "../client/mod.ts";
import { assert, assertEquals } from "./assert.ts";
import { deadline, eventually, startStack } from "./helpers.ts";
import { startTcpProxy } from "./tcp_proxy.ts";

const FAST = {
  reconnect: { initialDelayMs: 20, maxDelayMs: 100, factor: 2, maxAttempts: 50 },
  connectTimeoutMs: 2000,
};

async function collect(handle: { deltas: AsyncIterable<string> }): Promise<string> {
  let text = "";
  for await (const d of handle.deltas) text += d;
  return text;
}

Deno.test("sdk: ask streams deltas and resolves with the final response", async () => {
  const stack = await startStack();
  const client = new AgentClient(stack.wsUrl, FAST);
  try {
    const statuses: string[] = [];
    client.on("status", (s) => statuses.push(s.state));
    await client.connect();
    assertEquals(client.state, "open");
    stack.sim.script({ kind: "stream", tokens: ["Hi", " there"] });
    const handle = client.ask("hello");
    const [text, final] = await Promise.all([collect(handle), handle.response]);
    assertEquals([text, final.content, final.finish_reason], ["Hi there", "Hi there", "stop"]);
    assert(statuses.includes("thinking"));
    const history = await client.history();
    assertEquals((history.messages as unknown[]).length, 2);
    assertEquals((await client.feedback(handle.id, "up")).event, "feedback_received");
    assert((await client.ping()) >= 0);
  } finally {
    client.close();
    await stack.close();
  }
});

Deno.test("sdk: a failed query rejects with a typed AgentError", async () => {
  const stack = await startStack();
  const client = new AgentClient(stack.wsUrl, FAST);
  try {
    await client.connect();
    stack.sim.script({ kind: "http_error", status: 402 });
    const err = await client.ask("costly").response.then(() => null, (e) => e);
    assert(err instanceof AgentError);
    assertEquals([err.code, err.retryable], ["insufficient_credits", false]);
  } finally {
    client.close();
    await stack.close();
  }
});

Deno.test("sdk: network drops at random points; every answer arrives complete, exactly once", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "10" });
  const proxy = startTcpProxy(stack.server.port);
  const client = new AgentClient(`ws://127.0.0.1:${proxy.port}`, FAST);
  const seqs: number[] = [];
  client.on("frame", (f) => {
    if (f.seq > 0) seqs.push(f.seq);
  });
  try {
    await client.connect();
    const sessionId = client.sessionId;
    for (let round = 0; round < 10; round++) {
      const tokens = Array.from({ length: 20 }, (_, i) => `q${round}t${i} `);
      stack.sim.when(`[q${round}]`, { kind: "stream", tokens, gapMs: 3 });
      const handle = client.ask(`[q${round}]`);
      const streamed = collect(handle);
      // Cut the network somewhere before, during or after the answer.
      const cutAfter = Math.floor(Math.random() * 25);
      let seen = 0;
      const off = client.on("response", (f) => {
        if (f.id === handle.id && ++seen === cutAfter) proxy.cutAll();
      });
      if (cutAfter === 0) proxy.cutAll();
      const final = await deadline(handle.response, 10_000, `answer ${round}`);
      off();
      assertEquals(final.content, tokens.join(""));
      assertEquals(await streamed, tokens.join(""), "deltas: no gap, no repeat");
    }
    assertEquals(client.sessionId, sessionId, "one session throughout");
    seqs.forEach((s, i) => assertEquals(s, i + 1, "seq gapless and unique"));
  } finally {
    client.close();
    await proxy.close();
    await stack.close();
  }
});

Deno.test("sdk: sends made while offline are queued and flushed in order after resume", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "10" });
  const proxy = startTcpProxy(stack.server.port);
  const client = new AgentClient(`ws://127.0.0.1:${proxy.port}`, FAST);
  try {
    await client.connect();
    proxy.refuse = true;
    proxy.cutAll();
    await eventually(() => client.state === "reconnecting", "client notices the drop");
    const handles = ["one", "two", "three"].map((q) => {
      stack.sim.when(`<${q}>`, { kind: "stream", tokens: [q] });
      return client.ask(`<${q}>`);
    });
    assertEquals(stack.sim.requests.length, 0, "nothing reached the server while offline");
    proxy.refuse = false;
    const finals = await deadline(Promise.all(handles.map((h) => h.response)), 10_000, "answers");
    assertEquals(finals.map((f) => f.content), ["one", "two", "three"]);
    assertEquals(stack.sim.requests.map((r) => r.body.messages!.at(-1)!.content), [
      "<one>",
      "<two>",
      "<three>",
    ]);
  } finally {
    client.close();
    await proxy.close();
    await stack.close();
  }
});

Deno.test("sdk: a dead socket (no traffic, TCP still open) is detected and resumed", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "10", HEARTBEAT_SECONDS: "0" });
  const proxy = startTcpProxy(stack.server.port);
  const client = new AgentClient(`ws://127.0.0.1:${proxy.port}`, {
    ...FAST,
    heartbeat: { intervalMs: 100, timeoutMs: 150 },
  });
  try {
    await client.connect();
    const closes: number[] = [];
    client.on("close", (e) => closes.push(e.code));
    stack.sim.script({
      kind: "stream",
      tokens: Array.from({ length: 30 }, (_, i) => `${i} `),
      gapMs: 20,
    });
    const handle = client.ask("through a dead link");
    await deadline(new Promise((r) => client.on("response", r)), 3000, "first delta");
    proxy.blackhole = true;
    await eventually(() => closes.length > 0, "dead socket detected", 3000);
    proxy.blackhole = false;
    const final = await deadline(handle.response, 10_000, "answer after resume");
    assertEquals(final.content, Array.from({ length: 30 }, (_, i) => `${i} `).join(""));
  } finally {
    client.close();
    await proxy.close();
    await stack.close();
  }
});

Deno.test("sdk: stops for good on 4001 unauthorized, without retrying", async () => {
  const stack = await startStack({ AUTH_MODE: "supabase", SUPABASE_URL: "http://127.0.0.1:9" });
  const client = new AgentClient(stack.wsUrl, { ...FAST, token: "not-a-jwt" });
  try {
    let reconnects = 0;
    client.on("reconnecting", () => reconnects++);
    const err = await client.connect().then(() => null, (e) => e);
    assert(err instanceof AgentError, String(err));
    assertEquals(err.code, "unauthorized");
    assertEquals(client.state, "closed");
    assertEquals(reconnects, 0);
  } finally {
    client.close();
    await stack.close();
  }
});

Deno.test("sdk: a server restart loses the in-memory session; in-flight asks reject, never hang", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "10" });
  const port = stack.server.port;
  const client = new AgentClient(stack.wsUrl, FAST);
  let second: Awaited<ReturnType<typeof startStack>> | undefined;
  try {
    await client.connect();
    const first = client.sessionId;
    stack.sim.script({ kind: "stream", tokens: Array(100).fill("x"), gapMs: 20 });
    const handle = client.ask("long");
    await deadline(new Promise((r) => client.on("response", r)), 3000, "first delta");
    const lost = new Promise((r) => client.on("session", r));
    await stack.close();
    second = await startStack({ PORT: String(port), RESUME_WINDOW_SECONDS: "10" });
    const err = await deadline(handle.response.then(() => null, (e) => e), 10_000, "rejection");
    assert(err instanceof AgentError);
    assertEquals(err.code, "session_lost");
    await deadline(lost, 5000, "session event");
    assert(client.sessionId !== first, "the client moved to a new session");
    assertEquals(typeof (await client.ask("after restart").response).content, "string");
  } finally {
    client.close();
    await second?.close();
  }
});
