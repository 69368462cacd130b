// Protocol v1.1 in the client SDK — tools, approvals, reasoning — against a SCRIPTED FAKE SERVER
// (tests/fake_agent_server.ts), not the real one: the real server does not send tool frames
// yet. Every test name says so. End-to-end tests against the real server belong beside the
// server's tool loop.
import { AgentClient, type AgentError, type AskEvent, CLOSE } from "../client/mod.ts";
import { assert, assertEquals } from "./assert.ts";
import { answer, type FakeSession, startFakeAgent } from "./fake_agent_server.ts";
import { deadline, type Frame } from "./helpers.ts";

const FAST = {
  reconnect: { initialDelayMs: 10, maxDelayMs: 50, factor: 2, maxAttempts: 20 },
  connectTimeoutMs: 2000,
};

const WEATHER = {
  description: "Current weather in a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
  },
};

function toolCall(id: string, callId: string, tool: string, extra: Frame = {}): Frame {
  return {
    type: "tool_call",
    id,
    tool_call_id: callId,
    tool,
    arguments: {},
    iteration: 1,
    executor: "client",
    needs_approval: false,
    ...extra,
  };
}

/** The server's account of a call, built from what the client answered. */
function toolResult(s: FakeSession, id: string, callId: string, tool: string, from: Frame) {
  s.send({
    type: "tool_result",
    id,
    tool_call_id: callId,
    tool,
    ok: from.error === undefined,
    ...(from.error === undefined ? { result: from.result } : { error: from.error }),
    duration_ms: 1,
  });
}

function clientFrames(s: FakeSession, type: string): Frame[] {
  return s.received.filter((f) => f.type === type);
}

/** A promise and the function that settles it. */
function gate<T = void>(): { promise: Promise<T>; open(v: T): void } {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => open = r);
  return { promise, open };
}

Deno.test("sdk v1.1 (scripted fake server): a client tool is declared, run once and answered; reasoning and tool events stream", async () => {
  const fake = startFakeAgent(async (q, s) => {
    if (!q.tools) return answer(s, q.id, "no tools declared");
    s.send({ type: "status", id: q.id, state: "thinking", iteration: 1 });
    s.send({ type: "reasoning", id: q.id, delta: "The user wants " });
    s.send({ type: "reasoning", id: q.id, delta: "the weather." });
    s.send(toolCall(q.id, "call_1", "get_weather", { arguments: { city: "Paris" } }));
    const r = await s.next((f) => f.type === "tool_result", "tool_result");
    toolResult(s, q.id, "call_1", "get_weather", r);
    s.send({ type: "status", id: q.id, state: "thinking", iteration: 2 });
    answer(s, q.id, `It is ${r.result.celsius} °C in ${r.result.city}.`, {
      iterations: 2,
      tool_calls: 1,
      reasoning: "The user wants the weather.",
    });
  });
  const runs: unknown[] = [];
  const client = new AgentClient(fake.url, {
    ...FAST,
    tools: {
      get_weather: {
        ...WEATHER,
        execute: (args: { city: string }, ctx) => {
          runs.push([args, ctx.toolCallId, ctx.signal.aborted]);
          return { city: args.city, celsius: 21 };
        },
      },
    },
  });
  try {
    await client.connect();
    assert(client.features.includes("client_tools"), "features are read from connected");
    const h = client.ask("Weather in Paris?");
    const events: AskEvent[] = [];
    let reasoning = "";
    await deadline(
      Promise.all([
        (async () => {
          for await (const e of h.events) events.push(e);
        })(),
        (async () => {
          for await (const d of h.reasoning) reasoning += d;
        })(),
      ]),
      5000,
      "the query's events",
    );
    const final = await h.response;
    assertEquals(final.content, "It is 21 °C in Paris.");
    assertEquals(reasoning, "The user wants the weather.");
    assertEquals(events.map((e) => e.type), [
      "status",
      "reasoning",
      "reasoning",
      "tool_call",
      "tool_result",
      "status",
      "response",
      "response",
    ]);
    const s = fake.sessions[0];
    assertEquals(clientFrames(s, "query")[0].tools, [{ name: "get_weather", ...WEATHER }]);
    assertEquals(runs, [[{ city: "Paris" }, "call_1", false]]);
    assertEquals(clientFrames(s, "tool_result"), [{
      type: "tool_result",
      id: h.id,
      tool_call_id: "call_1",
      result: { city: "Paris", celsius: 21 },
    }]);
    // Declaring can be turned off per query.
    const plain = client.ask("no tools", { tools: false });
    await deadline(plain.response, 3000, "second answer");
    assertEquals(clientFrames(s, "query")[1].tools, undefined);
  } finally {
    client.close();
    await fake.close();
  }
});

Deno.test("sdk v1.1 (scripted fake server): a tool that throws, or one the client lacks, answers with an error", async () => {
  const fake = startFakeAgent(async (q, s) => {
    s.send(toolCall(q.id, "call_a", "flaky"));
    s.send(toolCall(q.id, "call_b", "not_registered"));
    const [a, b] = await Promise.all([
      s.next((f) => f.tool_call_id === "call_a", "answer to call_a"),
      s.next((f) => f.tool_call_id === "call_b", "answer to call_b"),
    ]);
    toolResult(s, q.id, "call_a", "flaky", a);
    toolResult(s, q.id, "call_b", "not_registered", b);
    answer(s, q.id, "recovered");
  });
  const client = new AgentClient(fake.url, {
    ...FAST,
    tools: {
      flaky: {
        execute: () => {
          throw new Error("Disk on fire");
        },
      },
    },
  });
  try {
    await client.connect();
    const h = client.ask("try");
    assertEquals((await deadline(h.response, 5000, "answer")).content, "recovered");
    const answers = clientFrames(fake.sessions[0], "tool_result");
    const byCall = Object.fromEntries(answers.map((f) => [f.tool_call_id, f]));
    assertEquals(byCall.call_a.error, "Disk on fire");
    assertEquals(byCall.call_b.error, 'Unknown client tool "not_registered"');
    assertEquals([byCall.call_a.result, answers.length], [undefined, 2]);
  } finally {
    client.close();
    await fake.close();
  }
});

Deno.test("sdk v1.1 (scripted fake server): onApproval decides on a server tool; a denial carries its reason", async () => {
  const fake = startFakeAgent(async (q, s) => {
    s.send(
      toolCall(q.id, "call_d", "delete_rows", {
        executor: "server",
        needs_approval: true,
        arguments: { table: "notes" },
      }),
    );
    const a = await s.next((f) => f.type === "approval", "approval");
    s.send({
      type: "tool_result",
      id: q.id,
      tool_call_id: "call_d",
      tool: "delete_rows",
      ok: false,
      error: `Denied: ${a.reason}`,
      duration_ms: 5,
    });
    answer(s, q.id, "I did not delete anything.");
  });
  const asked: unknown[] = [];
  const client = new AgentClient(fake.url, {
    ...FAST,
    onApproval: async (call) => {
      asked.push([call.tool, call.executor, call.arguments]);
      await new Promise((r) => setTimeout(r, 1)); // a human takes a moment
      return { approved: false, reason: "Not today" };
    },
  });
  try {
    await client.connect();
    const h = client.ask("clean up");
    assertEquals(
      (await deadline(h.response, 5000, "answer")).content,
      "I did not delete anything.",
    );
    assertEquals(asked, [["delete_rows", "server", { table: "notes" }]]);
    const s = fake.sessions[0];
    assertEquals(clientFrames(s, "approval"), [{
      type: "approval",
      id: h.id,
      tool_call_id: "call_d",
      approved: false,
      reason: "Not today",
    }]);
    assertEquals(
      clientFrames(s, "tool_result").length,
      0,
      "a server tool is not the client's to run",
    );
  } finally {
    client.close();
    await fake.close();
  }
});

Deno.test("sdk v1.1 (scripted fake server): without onApproval the app approves later; the approved client tool then runs", async () => {
  const fake = startFakeAgent(async (q, s) => {
    s.send(
      toolCall(q.id, "call_w", "get_weather", {
        needs_approval: true,
        arguments: { city: "Oslo" },
      }),
    );
    await s.next((f) => f.type === "approval" && f.approved === true, "approval");
    const r = await s.next((f) => f.type === "tool_result", "tool_result");
    toolResult(s, q.id, "call_w", "get_weather", r);
    answer(s, q.id, `${r.result.celsius} °C`);
  });
  let runs = 0;
  const client = new AgentClient(fake.url, {
    ...FAST,
    tools: {
      get_weather: { ...WEATHER, needs_approval: true, execute: () => (runs++, { celsius: -3 }) },
    },
  });
  try {
    await client.connect();
    const requested = new Promise<string>((r) => client.on("approval", (req) => r(req.toolCallId)));
    const h = client.ask("Weather in Oslo?");
    assertEquals(await deadline(requested, 3000, "approval event"), "call_w");
    assertEquals(client.pendingApprovals.map((r) => [r.tool, r.arguments]), [
      ["get_weather", { city: "Oslo" }],
    ]);
    assertEquals(runs, 0, "nothing runs before the decision");
    client.approve(h.id, "call_w", true);
    client.approve(h.id, "call_w", true); // a double click decides nothing more
    assertEquals((await deadline(h.response, 5000, "answer")).content, "-3 °C");
    assertEquals(client.pendingApprovals, []);
    assertEquals(runs, 1);
    const s = fake.sessions[0];
    assertEquals(s.received.filter((f) => f.type !== "query").map((f) => f.type), [
      "approval",
      "tool_result",
    ]);
    assertEquals(clientFrames(s, "query")[0].tools[0].needs_approval, true);
  } finally {
    client.close();
    await fake.close();
  }
});

Deno.test("sdk v1.1 (scripted fake server): across a drop and resume a tool call runs and is answered exactly once", async () => {
  const started = gate<void>();
  const tool = gate<void>();
  const fake = startFakeAgent(async (q, s) => {
    const call = s.send(toolCall(q.id, "call_r", "slow", { arguments: { n: 1 } }));
    // The socket drops while the client's tool runs; on resume a careless server sends the
    // same call again under a new seq (the bug peers have: tool steps replayed twice).
    await deadline(started.promise, 3000, "the tool to start");
    s.drop();
    await s.attached();
    s.send({ ...call, seq: undefined, timestamp: undefined });
    tool.open();
    const r = await s.next((f) => f.type === "tool_result", "tool_result");
    toolResult(s, q.id, "call_r", "slow", r);
    answer(s, q.id, `got ${r.result}`);
  });
  let runs = 0;
  const client = new AgentClient(fake.url, {
    ...FAST,
    tools: {
      slow: {
        execute: async () => {
          runs++;
          started.open();
          await tool.promise;
          return "done";
        },
      },
    },
  });
  try {
    const resumed: boolean[] = [];
    client.on("open", (e) => resumed.push(e.resumed));
    await client.connect();
    const h = client.ask("slow one");
    assertEquals((await deadline(h.response, 5000, "answer")).content, "got done");
    assertEquals(resumed, [false, true]);
    assertEquals(runs, 1, "the tool ran once");
    const s = fake.sessions[0];
    // Give a second answer, if the client were to send one, the time to arrive.
    await client.ping();
    assertEquals(clientFrames(s, "tool_result").length, 1, "one answer for one tool_call_id");
  } finally {
    client.close();
    await fake.close();
  }
});

Deno.test("sdk v1.1 (scripted fake server): a tool answer lost with its socket is sent again after the resume", async () => {
  let attempt = 0;
  const fake = startFakeAgent(async (q, s) => {
    s.send(toolCall(q.id, "call_l", "echo", { arguments: { x: 7 } }));
    // The first answer "never arrived": the server ignores it and the socket dies.
    await s.next((f) => f.type === "tool_result", "first tool_result");
    attempt++;
    s.drop();
    const again = await s.next((f) => f.type === "tool_result", "resent tool_result");
    attempt++;
    toolResult(s, q.id, "call_l", "echo", again);
    answer(s, q.id, `echo ${again.result.x}`);
  });
  const client = new AgentClient(fake.url, {
    ...FAST,
    tools: { echo: { execute: (args) => args } },
  });
  try {
    const errors: AgentError[] = [];
    client.on("error", (e) => errors.push(e));
    await client.connect();
    const h = client.ask("echo");
    assertEquals((await deadline(h.response, 5000, "answer")).content, "echo 7");
    const answers = clientFrames(fake.sessions[0], "tool_result");
    assertEquals([attempt, answers.length], [2, 2]);
    assertEquals(answers[0], answers[1], "the same answer, resent");
    assertEquals(errors, []);
  } finally {
    client.close();
    await fake.close();
  }
});

Deno.test("sdk v1.1 (scripted fake server): a resent answer the server already had is refused with not_found, silently", async () => {
  const fake = startFakeAgent(async (q, s) => {
    s.send(toolCall(q.id, "call_n", "echo", { arguments: { x: 1 } }));
    const first = await s.next((f) => f.type === "tool_result", "tool_result");
    // The server took the answer but the socket died before it said so.
    s.drop();
    await s.next((f) => f.type === "tool_result", "the resend");
    s.send({
      type: "error",
      code: "not_found",
      message: "No pending tool call call_n",
      retryable: false,
      tool_call_id: "call_n",
    });
    toolResult(s, q.id, "call_n", "echo", first);
    answer(s, q.id, "fine");
  });
  const client = new AgentClient(fake.url, { ...FAST, tools: { echo: { execute: (a) => a } } });
  try {
    const errors: AgentError[] = [];
    client.on("error", (e) => errors.push(e));
    await client.connect();
    const h = client.ask("echo");
    assertEquals((await deadline(h.response, 5000, "answer")).content, "fine");
    assertEquals(errors.map((e) => e.code), [], "the refusal of a resend is no error");
  } finally {
    client.close();
    await fake.close();
  }
});

Deno.test("sdk v1.1 (scripted fake server): when the server gives up on a client tool, its run is aborted and never answered", async () => {
  const aborted = gate<string>();
  const fake = startFakeAgent((q, s) => {
    s.send(toolCall(q.id, "call_t", "hang"));
    s.send({
      type: "tool_result",
      id: q.id,
      tool_call_id: "call_t",
      tool: "hang",
      ok: false,
      error: "Client tool timed out",
      duration_ms: 10,
    });
    answer(s, q.id, "gave up on the tool");
  });
  const client = new AgentClient(fake.url, {
    ...FAST,
    tools: {
      hang: {
        execute: (_args, { signal }) =>
          new Promise((_, reject) =>
            signal.addEventListener("abort", () => {
              aborted.open(String(signal.reason?.message));
              reject(signal.reason);
            })
          ),
      },
    },
  });
  try {
    await client.connect();
    const h = client.ask("hang");
    assertEquals((await deadline(h.response, 5000, "answer")).content, "gave up on the tool");
    assert((await deadline(aborted.promise, 3000, "abort")).includes("no longer waits"));
    await client.ping();
    assertEquals(clientFrames(fake.sessions[0], "tool_result"), []);
  } finally {
    client.close();
    await fake.close();
  }
});

Deno.test("sdk (scripted fake server): close 4003 token expired reconnects with a fresh token and resumes the session", async () => {
  let sockets = 0;
  const fake = startFakeAgent((q, s) => answer(s, q.id, "still here"), {
    onConnect: (_s, ws) => {
      if (++sockets === 1) ws.close(CLOSE.tokenExpired, "Token expired");
    },
  });
  let issued = 0;
  const client = new AgentClient(fake.url, { ...FAST, token: () => `token${++issued}` });
  try {
    const opens: boolean[] = [];
    const resumed = new Promise((r) =>
      client.on("open", (e) => {
        opens.push(e.resumed);
        if (e.resumed) r(0);
      })
    );
    await client.connect();
    await deadline(resumed, 3000, "the resume");
    assertEquals(opens, [false, true]);
    assertEquals(fake.offered.map((p) => p.find((x) => x.startsWith("jwt-"))), [
      "jwt-token1",
      "jwt-token2",
    ]);
    assertEquals(fake.sessions.length, 1, "the same session throughout");
    assertEquals((await deadline(client.ask("hi").response, 3000, "answer")).content, "still here");
  } finally {
    client.close();
    await fake.close();
  }
});
