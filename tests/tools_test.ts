/**
 * The agent loop: server tools, client tools, approval, reasoning — each
 * `tool_call` followed by exactly one `tool_result`, each query ended by
 * exactly one terminal frame, under failure, cancel and resume.
 */
import { z } from "zod";
import { assert, assertEquals } from "./assert.ts";
import { assertGapless, type Frame, startStack, TestClient } from "./helpers.ts";
import { type AgentDefinition, AgentError } from "../supabase/functions/_shared/mod.ts";
import { deleteFileTool } from "./fixtures/delete_file.ts";

const weather = {
  description: "The weather in a city",
  parameters: z.object({ city: z.string() }),
  execute: ({ city }: { city: string }) => ({ city, forecast: "sunny", c: 21 }),
};

function toolFrames(client: TestClient, id: string, type: "tool_call" | "tool_result"): Frame[] {
  return client.framesOf(id).filter((f) => f.type === type);
}

/** Every tool_call has exactly one tool_result, after it, and there is one terminal. */
function assertPaired(client: TestClient, id: string): void {
  const frames = client.framesOf(id);
  const calls = frames.filter((f) => f.type === "tool_call");
  for (const c of calls) {
    const results = frames.filter((f) =>
      f.type === "tool_result" && f.tool_call_id === c.tool_call_id
    );
    assertEquals(results.length, 1, `one result for ${c.tool_call_id}`);
    assert(results[0].seq > c.seq, "result after call");
  }
  const terminals = frames.filter((f) => (f.type === "response" && f.done) || f.type === "error");
  assertEquals(terminals.length, 1, "one terminal frame");
}

async function withStack(
  agent: AgentDefinition,
  fn: (s: Awaited<ReturnType<typeof startStack>>, c: TestClient) => Promise<void>,
  env: Record<string, string> = {},
) {
  const stack = await startStack(env, {}, { agent });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    await fn(stack, client);
    assertGapless(client.frames);
    await client.close();
  } finally {
    await stack.close();
  }
}

Deno.test("server tool: tool_call, tool_result, then the answer that used it; history keeps it all", async () => {
  await withStack({ tools: { weather } }, async (stack, client) => {
    stack.sim.script(
      {
        kind: "stream",
        tokens: ["Let me check. "],
        toolCalls: [{ id: "call_1", name: "weather", arguments: '{"city":"Oslo"}', fragments: 6 }],
      },
      { kind: "stream", tokens: ["It is ", "sunny."] },
      { kind: "stream", tokens: ["ok"] },
    );
    const id = client.query("Weather in Oslo?");
    const final = await client.terminal(id);
    assertEquals(final.content, "Let me check. It is sunny.");
    assertEquals([final.iterations, final.tool_calls, final.finish_reason], [2, 1, "stop"]);
    const [call] = toolFrames(client, id, "tool_call");
    assertEquals(
      [call.tool_call_id, call.tool, call.arguments, call.iteration, call.executor],
      ["call_1", "weather", { city: "Oslo" }, 1, "server"],
    );
    assertEquals(call.needs_approval, false);
    const [result] = toolFrames(client, id, "tool_result");
    assertEquals([result.ok, result.result], [true, { city: "Oslo", forecast: "sunny", c: 21 }]);
    assert(typeof result.duration_ms === "number");
    const thinking = client.framesOf(id).filter((f) => f.state === "thinking");
    assertEquals(thinking.map((f) => f.iteration), [1, 2]);
    assertPaired(client, id);
    // The second model call saw the call and its result.
    const second = stack.sim.requests[1].body.messages!;
    assertEquals(second.at(-2)!.tool_calls![0].function, {
      name: "weather",
      arguments: '{"city":"Oslo"}',
    });
    assertEquals(second.at(-1)!.role, "tool");
    assertEquals(second.at(-1)!.tool_call_id, "call_1");
    // So does the next query's.
    await client.terminal(client.query("And tomorrow?"));
    const third = stack.sim.requests[2].body.messages!.map((m) => m.role);
    assertEquals(third, ["system", "user", "assistant", "tool", "assistant", "user"]);
  });
});

Deno.test("client tool: declared with the query, run by the client, answered with tool_result", async () => {
  await withStack({}, async (stack, client) => {
    stack.sim.script(
      { kind: "stream", toolCalls: [{ id: "c1", name: "get_location", arguments: "{}" }] },
      { kind: "stream", tokens: ["You are in Lisbon."] },
    );
    const id = client.query("Where am I?", {
      tools: [{
        name: "get_location",
        description: "The user's location",
        parameters: { type: "object", properties: {} },
      }],
    });
    const call = await client.waitFor((f) => f.type === "tool_call");
    assertEquals([call.executor, call.tool], ["client", "get_location"]);
    const offered = stack.sim.requests[0].body.tools!;
    assertEquals(offered[0].function.name, "get_location");
    client.send({ type: "tool_result", id, tool_call_id: "c1", result: { city: "Lisbon" } });
    const final = await client.terminal(id);
    assertEquals(final.content, "You are in Lisbon.");
    const [result] = toolFrames(client, id, "tool_result");
    assertEquals([result.ok, result.result], [true, { city: "Lisbon" }]);
    assertEquals(stack.sim.requests[1].body.messages!.at(-1)!.content, '{"city":"Lisbon"}');
    // A second answer for the same call is refused and names the call, not the query.
    client.send({ type: "tool_result", id, tool_call_id: "c1", result: 1 });
    const late = await client.next((f) => f.type === "error");
    assertEquals([late.code, late.tool_call_id, late.id], ["not_found", "c1", undefined]);
    assertPaired(client, id);
  });
});

Deno.test("parallel tool calls run at once and return in the model's order", async () => {
  // `a` finishes only once `b` has started: run one after the other, it would time out.
  let bStarted: () => void = () => {};
  const started = new Promise<void>((r) => bStarted = r);
  const agent: AgentDefinition = {
    tools: {
      a: {
        description: "waits for b",
        parameters: z.object({}),
        execute: async () => {
          const t = new Promise((r) => setTimeout(() => r("sequential"), 2000));
          return await Promise.race([started.then(() => "A"), t]);
        },
      },
      b: {
        description: "quick",
        parameters: z.object({}),
        execute: () => {
          bStarted();
          return "B";
        },
      },
    },
  };
  await withStack(agent, async (stack, client) => {
    stack.sim.script(
      {
        kind: "stream",
        toolCalls: [{ id: "ta", name: "a", arguments: "{}" }, {
          id: "tb",
          name: "b",
          arguments: "{}",
        }],
      },
      { kind: "stream", tokens: ["done"] },
    );
    const id = client.query("both");
    await client.terminal(id, 5000);
    const tools = stack.sim.requests[1].body.messages!.filter((m) => m.role === "tool");
    assertEquals(tools.map((m) => [m.tool_call_id, m.content]), [["ta", '"A"'], ["tb", '"B"']]);
    assertPaired(client, id);
  });
});

Deno.test("approval: granted runs the tool, denied tells the model why, unanswered times out", async () => {
  const deleteFile = deleteFileTool();
  const runs = deleteFile.runs;
  const agent: AgentDefinition = { tools: { delete_file: deleteFile.tool } };
  await withStack(agent, async (stack, client) => {
    const ask = (n: number) => ({
      kind: "stream" as const,
      toolCalls: [{ id: `d${n}`, name: "delete_file", arguments: '{"path":"/tmp/x"}' }],
    });
    stack.sim.script(ask(1), { kind: "stream", tokens: ["ok"] });
    const q1 = client.query("delete it");
    const call = await client.waitFor((f) => f.type === "tool_call" && f.tool_call_id === "d1");
    assertEquals(call.needs_approval, true);
    assertEquals(runs(), 0, "not run before approval");
    client.send({ type: "approval", id: q1, tool_call_id: "d1", approved: true });
    await client.terminal(q1);
    assertEquals(toolFrames(client, q1, "tool_result")[0].result, { deleted: "/tmp/x" });
    assertEquals(runs(), 1);

    stack.sim.script(ask(2), { kind: "stream", tokens: ["fine"] });
    const q2 = client.query("delete again");
    await client.waitFor((f) => f.type === "tool_call" && f.tool_call_id === "d2");
    client.send({
      type: "approval",
      id: q2,
      tool_call_id: "d2",
      approved: false,
      reason: "keep it",
    });
    await client.terminal(q2);
    const denied = toolFrames(client, q2, "tool_result")[0];
    assertEquals([denied.ok, denied.error], [false, "Denied by the user: keep it"]);
    assertEquals(runs(), 1);
    assert(stack.sim.requests[3].body.messages!.at(-1)!.content!.includes("Denied by the user"));

    stack.sim.script(ask(3), { kind: "stream", tokens: ["gave up"] });
    const q3 = client.query("delete once more");
    const final = await client.terminal(q3);
    const timedOut = toolFrames(client, q3, "tool_result")[0];
    assertEquals(timedOut.ok, false);
    assert(timedOut.error.includes("timed out"), timedOut.error);
    assertEquals(final.content, "gave up");
    assertEquals(runs(), 1);
    // An approval after the timeout finds nothing to approve.
    client.send({ type: "approval", id: q3, tool_call_id: "d3", approved: true });
    const late = await client.next((f) => f.type === "error");
    assertEquals([late.code, late.tool_call_id], ["not_found", "d3"]);
    for (const q of [q1, q2, q3]) assertPaired(client, q);
  }, { APPROVAL_TIMEOUT_SECONDS: "0.3" });
});

Deno.test("tools that fail: bad JSON, unknown name, schema mismatch, a throw, a hang", async () => {
  const agent: AgentDefinition = {
    tools: {
      weather,
      boom: {
        description: "throws",
        parameters: z.object({}),
        execute: () => {
          throw new Error("database password is hunter2");
        },
      },
      polite: {
        description: "throws politely",
        parameters: z.object({}),
        execute: () => {
          throw new AgentError("not_found", "No such order");
        },
      },
      hang: {
        description: "never returns",
        parameters: z.object({}),
        timeoutMs: 200,
        execute: () => new Promise(() => {}),
      },
    },
  };
  await withStack(agent, async (stack, client) => {
    stack.sim.script(
      {
        kind: "stream",
        toolCalls: [
          { id: "j", name: "weather", arguments: '{"city": "Oslo"' },
          { id: "u", name: "no_such_tool", arguments: "{}" },
          { id: "s", name: "weather", arguments: '{"town":"Oslo"}' },
          { id: "b", name: "boom", arguments: "{}" },
          { id: "p", name: "polite", arguments: "{}" },
          { id: "h", name: "hang", arguments: "{}" },
        ],
      },
      { kind: "stream", tokens: ["recovered"] },
    );
    const id = client.query("try everything");
    const final = await client.terminal(id, 5000);
    assertEquals(final.content, "recovered");
    const byId: Record<string, Frame> = Object.fromEntries(
      toolFrames(client, id, "tool_result").map((f) => [f.tool_call_id, f]),
    );
    assertEquals(byId.j.error, "The arguments were not a valid JSON object");
    assertEquals(byId.u.error, "Unknown tool: no_such_tool");
    assert(byId.s.error.startsWith("Invalid arguments: city"), byId.s.error);
    assertEquals(byId.b.error, "The tool failed");
    assertEquals(byId.p.error, "No such order");
    assert(byId.h.error.includes("timed out"), byId.h.error);
    for (const f of Object.values(byId)) assertEquals(f.ok, false);
    assert(!JSON.stringify(client.frames).includes("hunter2"), "a tool's error does not leak");
    assert(stack.logs.some((l) => l.includes("tool_failed")), "the throw is logged");
    const toModel = stack.sim.requests[1].body.messages!.filter((m) => m.role === "tool");
    assertEquals(toModel.length, 6);
    assertPaired(client, id);
  });
});

Deno.test("the loop stops at MAX_TOOL_ITERATIONS with finish_reason max_iterations", async () => {
  await withStack({ tools: { weather } }, async (stack, client) => {
    stack.sim.when("forever", {
      kind: "stream",
      toolCalls: [{ name: "weather", arguments: '{"city":"Rome"}' }],
    });
    const id = client.query("forever");
    const final = await client.terminal(id);
    assertEquals([final.finish_reason, final.iterations, final.tool_calls], [
      "max_iterations",
      3,
      2,
    ]);
    assertEquals(stack.sim.requests.length, 3);
    assertPaired(client, id);
    // The unanswered calls of the last model turn are not kept in history.
    stack.sim.when("plain", { kind: "stream", tokens: ["fine"] });
    await client.terminal(client.query("plain"));
    const roles = stack.sim.requests.at(-1)!.body.messages!.map((m) => m.role);
    assertEquals(roles.filter((r) => r === "tool").length, 2);
  }, { MAX_TOOL_ITERATIONS: "3" });
});

Deno.test("cancel during a tool aborts it: its result says so, and the query ends once", async () => {
  let aborted = false;
  const agent: AgentDefinition = {
    tools: {
      slow: {
        description: "slow",
        parameters: z.object({}),
        execute: (_args, ctx) =>
          new Promise((resolve) => {
            ctx.signal.addEventListener("abort", () => {
              aborted = true;
              resolve("late");
            });
          }),
      },
    },
  };
  await withStack(agent, async (stack, client) => {
    stack.sim.script({
      kind: "stream",
      tokens: ["Working "],
      toolCalls: [{ id: "s1", name: "slow", arguments: "{}" }],
    });
    const id = client.query("slow please");
    await client.waitFor((f) => f.type === "tool_call");
    client.send({ type: "command", name: "cancel", args: { id } });
    const final = await client.terminal(id);
    assertEquals([final.finish_reason, final.content], ["cancelled", "Working "]);
    assert(aborted, "the tool's signal aborted");
    const [result] = toolFrames(client, id, "tool_result");
    assertEquals([result.ok, result.error], [false, "Cancelled"]);
    assertPaired(client, id);
    assertEquals(stack.sim.requests.length, 1, "no model call after the cancel");
  });
});

Deno.test("a client tool call waits while the socket is away; the resumed client answers it", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "10" });
  try {
    const { client, connected } = await TestClient.open(stack.wsUrl);
    stack.sim.script(
      { kind: "stream", toolCalls: [{ id: "loc", name: "where", arguments: "{}" }] },
      { kind: "stream", tokens: ["Found you."] },
    );
    const id = client.query("find me", { tools: [{ name: "where" }] });
    const call = await client.waitFor((f) => f.type === "tool_call");
    await client.close();
    const back = await TestClient.connect(
      `${stack.wsUrl}?session_id=${connected.session_id}&last_seq=${call.seq - 1}`,
    );
    const replayed = await back.waitFor((f) => f.type === "tool_call");
    assertEquals(replayed.seq, call.seq);
    back.send({ type: "tool_result", id, tool_call_id: "loc", result: "here" });
    const final = await back.terminal(id);
    assertEquals(final.content, "Found you.");
    assertEquals(
      back.frames.filter((f) => f.type === "tool_result").length,
      1,
      "one result after resume",
    );
    await back.close();
  } finally {
    await stack.close();
  }
});

Deno.test("bad tool declarations and tool answers get clear errors and cost nothing", async () => {
  await withStack({ tools: { weather } }, async (stack, client) => {
    const cases: [unknown, string][] = [
      [[{ name: "weather" }], "already taken"],
      [[{ name: "has space" }], "Invalid query frame"],
      [[{ name: "x", parameters: { type: "array" } }], "Invalid query frame"],
      [[{ name: "x" }, { name: "x" }], "already taken"],
      ["not a list", "Invalid query frame"],
    ];
    for (const [tools, message] of cases) {
      const id = client.query("q", { tools });
      const err = await client.terminal(id);
      assertEquals([err.type, err.code], ["error", "invalid_message"]);
      assert(err.message.includes(message), `${err.message} ~ ${message}`);
    }
    client.send({ type: "tool_result", id: "nope", tool_call_id: "nope", result: 1 });
    const unknown = await client.next((f) => f.type === "error");
    assertEquals([unknown.code, unknown.tool_call_id], ["not_found", "nope"]);
    client.send({ type: "approval", id: "nope", tool_call_id: "x" });
    const invalid = await client.next((f) => f.type === "error");
    assertEquals(invalid.code, "invalid_message");
    assertEquals(stack.sim.requests.length, 0);
  });
});

Deno.test("reasoning streams apart from the answer; STREAM_REASONING=false hides it", async () => {
  await withStack({}, async (stack, client) => {
    stack.sim.script(
      { kind: "stream", reasoning: ["First, ", "think."], tokens: ["Answer."] },
      { kind: "stream", reasoning: ["Details."], reasoningDetails: true, tokens: ["Two."] },
    );
    const id = client.query("deep");
    const final = await client.terminal(id);
    assertEquals(final.content, "Answer.");
    assertEquals(final.reasoning, "First, think.");
    const frames = client.framesOf(id);
    const reasoning = frames.filter((f) => f.type === "reasoning").map((f) => f.delta);
    assertEquals(reasoning, ["First, ", "think."]);
    const firstDelta = frames.findIndex((f) => f.delta === "Answer.");
    assert(frames.findIndex((f) => f.type === "reasoning") < firstDelta, "reasoning first");
    const second = await client.terminal(client.query("details"));
    assertEquals(second.reasoning, "Details.");
  });
  await withStack({}, async (stack, client) => {
    stack.sim.script({ kind: "stream", reasoning: ["secret thoughts"], tokens: ["Hi."] });
    const id = client.query("deep");
    const final = await client.terminal(id);
    assertEquals(final.reasoning, undefined);
    assert(!client.framesOf(id).some((f) => f.type === "reasoning"));
  }, { STREAM_REASONING: "false" });
});

Deno.test("TOOLS=current_time: the offline simulator calls it for 'what time is it?'", async () => {
  await withStack({}, async (_stack, client) => {
    const id = client.query("What time is it?");
    const final = await client.terminal(id);
    const [call] = toolFrames(client, id, "tool_call");
    assertEquals(call.tool, "current_time");
    const [result] = toolFrames(client, id, "tool_result");
    assert(result.ok && !Number.isNaN(Date.parse(result.result.iso)), JSON.stringify(result));
    assert(final.content.includes("Simulated answer from the tool results"), final.content);
  }, { TOOLS: "current_time" });
});
