/**
 * "Write your own agent": what a deployer changes in their agent definition
 * reaches the wire — a prompt and model parameters per user and per query,
 * commands of their own, a hook that refuses or decorates a socket, a hook
 * after every turn, and another model backend.
 */
import { SignJWT } from "jose";
import { z } from "zod";
import { assert, assertEquals } from "./assert.ts";
import { startStack, TestClient } from "./helpers.ts";
import { startServerProcess } from "./process.ts";
import {
  AgentError,
  type ModelBackend,
  type TurnOutcome,
} from "../supabase/functions/_shared/mod.ts";

const SECRET = "agent-test-hs256-secret-0123456789abcdef";
const SUPABASE_URL = "http://127.0.0.1:9";

function token(claims: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    sub: "user-1",
    aud: "authenticated",
    iss: `${SUPABASE_URL}/auth/v1`,
    role: "authenticated",
    iat: now,
    exp: now + 600,
    ...claims,
  }).setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(new TextEncoder().encode(SECRET));
}

const authEnv = { AUTH_MODE: "supabase", SUPABASE_URL, SUPABASE_JWT_SECRET: SECRET };

Deno.test("the system prompt and model parameters follow the user's claims and the query's metadata", async () => {
  const stack = await startStack(authEnv, {}, {
    agent: {
      system: (ctx) =>
        `You help ${ctx.user?.claims.email ?? "a guest"}; answer in ${
          ctx.query.metadata.lang ?? "en"
        }.`,
      params: (ctx) =>
        ctx.user?.claims.plan === "pro"
          ? { model: "anthropic/claude-pro", maxTokens: 4000, temperature: 0.1 }
          : { maxTokens: 200 },
    },
  });
  try {
    const pro = await TestClient.connect(stack.wsUrl, [
      "agent-websocket.v1",
      `jwt-${await token({ email: "ada@example.com", plan: "pro" })}`,
    ]);
    await pro.waitFor((f) => f.event === "connected");
    const id = pro.query("Hello", { metadata: { lang: "fr" } });
    const final = await pro.terminal(id);
    assertEquals(final.type, "response");
    const body = stack.sim.requests.at(-1)!.body;
    assertEquals(body.messages![0], {
      role: "system",
      content: "You help ada@example.com; answer in fr.",
    });
    assertEquals(body.model, "anthropic/claude-pro");
    assertEquals(body.max_tokens, 4000);
    assertEquals(body.temperature, 0.1);

    const free = await TestClient.connect(stack.wsUrl, [
      "agent-websocket.v1",
      `jwt-${await token({ sub: "user-2", email: "bob@example.com" })}`,
    ]);
    await free.waitFor((f) => f.event === "connected");
    await free.terminal(free.query("Hi"));
    const freeBody = stack.sim.requests.at(-1)!.body;
    assertEquals(freeBody.messages![0].content, "You help bob@example.com; answer in en.");
    assertEquals(freeBody.model, stack.config.model);
    assertEquals(freeBody.max_tokens, 200);
    await pro.close();
    await free.close();
  } finally {
    await stack.close();
  }
});

Deno.test("a command of the deployer's answers like a built-in, and unknown_command lists it", async () => {
  const stack = await startStack({}, {}, {
    agent: {
      commands: {
        summarize: async (args, ctx) => {
          const n = (await ctx.session.id).length;
          return { event: "summary", content: `Summary of ${args.topic}`, length: n };
        },
        fail_politely: () => {
          throw new AgentError("not_found", "Nothing to summarize yet");
        },
        crash: () => {
          throw new Error("secret internals");
        },
      },
    },
  });
  try {
    const { client, connected } = await TestClient.open(stack.wsUrl);
    assertEquals(connected.commands, [
      "cancel",
      "reset",
      "history",
      "stats",
      "conversations",
      "search_memory",
      "clear_memory",
      "summarize",
      "fail_politely",
      "crash",
    ]);
    client.send({ type: "command", name: "summarize", id: "c1", args: { topic: "tides" } });
    const summary = await client.waitFor((f) => f.id === "c1");
    assertEquals(summary.type, "notification");
    assertEquals(summary.event, "summary");
    assertEquals(summary.content, "Summary of tides");
    assertEquals(summary.length, 36);

    client.send({ type: "command", name: "fail_politely", id: "c2" });
    const polite = await client.waitFor((f) => f.id === "c2");
    assertEquals([polite.type, polite.code, polite.message], [
      "error",
      "not_found",
      "Nothing to summarize yet",
    ]);

    client.send({ type: "command", name: "crash", id: "c3" });
    const crash = await client.waitFor((f) => f.id === "c3");
    assertEquals(crash.code, "internal_error");
    assert(!JSON.stringify(crash).includes("secret internals"), "no internals leak");

    client.send({ type: "command", name: "nope", id: "c4" });
    const unknown = await client.waitFor((f) => f.id === "c4");
    assertEquals(unknown.code, "unknown_command");
    assert(unknown.issues[0].message.includes("summarize"), unknown.issues[0].message);
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("a command may not take a built-in's name", async () => {
  let error: unknown;
  try {
    await startStack({}, {}, { agent: { commands: { reset: () => {} } } });
  } catch (err) {
    error = err;
  }
  assert(error instanceof Error && error.message.includes('"reset" is built in'), String(error));
});

Deno.test("onConnect refuses a socket with a clear error, or keeps state for the session", async () => {
  const stack = await startStack(authEnv, {}, {
    agent: {
      onConnect: (ctx) => {
        if (ctx.user?.claims.member !== true) {
          throw new AgentError("refused", "This agent is for members only");
        }
        ctx.state.greeting = `Welcome back, ${ctx.user.claims.name}`;
      },
      commands: { greet: (_args, ctx) => ({ content: String(ctx.state.greeting) }) },
    },
  });
  try {
    const guest = await TestClient.connect(stack.wsUrl, [
      "agent-websocket.v1",
      `jwt-${await token({ member: false })}`,
    ]);
    const refused = await guest.waitFor((f) => f.type === "error");
    assertEquals([refused.code, refused.message, refused.seq], [
      "refused",
      "This agent is for members only",
      0,
    ]);
    const closed = await guest.closed;
    assertEquals(closed.code, 1008);
    assert(!guest.frames.some((f) => f.event === "connected"), "no session for a refused socket");

    const member = await TestClient.connect(stack.wsUrl, [
      "agent-websocket.v1",
      `jwt-${await token({ member: true, name: "Ada" })}`,
    ]);
    await member.waitFor((f) => f.event === "connected");
    member.send({ type: "command", name: "greet", id: "g" });
    assertEquals((await member.waitFor((f) => f.id === "g")).content, "Welcome back, Ada");
    await member.close();
    assertEquals(stack.server.app.sessions.size, 1, "only the member's session exists");
  } finally {
    await stack.close();
  }
});

Deno.test("onTurnEnd hears every outcome: answered, cancelled and failed", async () => {
  const outcomes: TurnOutcome[] = [];
  const stack = await startStack({}, { tokenDelayMs: 5 }, {
    agent: {
      onTurnEnd: (turn) => {
        outcomes.push(turn);
        if (turn.finishReason === "stop") throw new Error("billing is down");
      },
    },
  });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script(
      { kind: "stream", tokens: ["a", "b"] },
      { kind: "stream", tokens: Array(200).fill("x "), gapMs: 10 },
      { kind: "http_error", status: 400 },
    );
    const ok = client.query("one");
    await client.terminal(ok);
    const cancelled = client.query("two");
    await client.waitFor((f) => f.id === cancelled && f.delta !== undefined);
    client.send({ type: "command", name: "cancel", args: { id: cancelled } });
    await client.terminal(cancelled);
    const failed = client.query("three");
    await client.terminal(failed);
    const deadline = Date.now() + 2000;
    while (outcomes.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assertEquals(outcomes.map((o) => [o.id, o.finishReason]), [
      [ok, "stop"],
      [cancelled, "cancelled"],
      [failed, "error"],
    ]);
    assertEquals(outcomes[0].content, "ab");
    assertEquals(outcomes[0].usage?.completion_tokens, 2);
    assert(outcomes[0].timing.total_ms >= 0);
    assert(outcomes[1].content.startsWith("x "), "the cancelled turn keeps its partial text");
    assert(outcomes[1].timing.first_token_ms !== null, "tokens streamed before the cancel");
    assertEquals(outcomes[2].error?.code, "upstream_error");
    assert(
      stack.logs.some((l) => l.includes("on_turn_end_failed") && l.includes("billing is down")),
      "a failing hook is logged",
    );
    // The failing hook did not hurt the session.
    await client.terminal(client.query("four"));
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("another model backend: text, reasoning, usage and errors through the same interface", async () => {
  const calls: string[] = [];
  const echo: ModelBackend = {
    name: "echo",
    defaultModel: "echo-1",
    async *stream(req, signal) {
      const question = String(req.messages.at(-1)!.content);
      calls.push(question);
      if (question === "fail") {
        throw new AgentError("upstream_unavailable", "Echo is resting", { retryable: true });
      }
      yield { type: "reasoning", text: "thinking about it" };
      for (const word of question.split(" ")) {
        if (signal.aborted) return;
        yield { type: "text", text: word.split("").reverse().join("") + " " };
      }
      yield {
        type: "usage",
        usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
      };
      yield { type: "finish", reason: "stop", model: "echo-1" };
    },
  };
  const stack = await startStack({}, {}, { agent: { model: echo } });
  try {
    const { client, connected } = await TestClient.open(stack.wsUrl);
    assertEquals(connected.model, "echo-1");
    const id = client.query("hello world");
    const final = await client.terminal(id);
    assertEquals(final.content, "olleh dlrow ");
    assertEquals(final.model, "echo-1");
    assertEquals(final.reasoning, "thinking about it");
    assertEquals(final.usage, { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 });
    assertEquals(client.framesOf(id).filter((f) => f.type === "reasoning").length, 1);
    const bad = await client.terminal(client.query("fail"));
    assertEquals([bad.type, bad.code, bad.message, bad.retryable], [
      "error",
      "upstream_unavailable",
      "Echo is resting",
      true,
    ]);
    assertEquals(stack.sim.requests.length, 0, "OpenRouter was never called");
    assertEquals(calls, ["hello world", "fail"]);
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("an edited agent_websocket/index.ts runs as its own process: prompt, command, backend", async () => {
  const server = await startServerProcess(
    { OPENROUTER_API_KEY: "" },
    new URL("./fixtures/my_agent.ts", import.meta.url).pathname,
  );
  try {
    const { client, connected } = await TestClient.open(server.wsUrl);
    assertEquals([connected.agent, connected.model], ["mirror-agent", "mirror-1"]);
    const final = await client.terminal(client.query("hi", { metadata: { lang: "de" } }));
    assertEquals(final.content, "help you lang=de ");
    client.send({ type: "command", name: "shout", id: "s", args: { text: "hey" } });
    const shouted = await client.waitFor((f) => f.id === "s");
    assertEquals([shouted.event, shouted.content], ["shouted", "HEY"]);
    await client.close();
  } finally {
    await server.kill("SIGTERM");
  }
});

Deno.test("a tool's zod parameters reach the model as JSON Schema", async () => {
  const stack = await startStack({}, {}, {
    agent: {
      tools: {
        lookup: {
          description: "Looks a word up",
          parameters: z.object({
            word: z.string().describe("The word"),
            limit: z.number().optional(),
          }),
          execute: () => "ok",
        },
      },
    },
  });
  try {
    const { client, connected } = await TestClient.open(stack.wsUrl);
    assertEquals(connected.tools, [{
      name: "lookup",
      description: "Looks a word up",
      needs_approval: false,
    }]);
    await client.terminal(client.query("plain question"));
    const tools = stack.sim.requests.at(-1)!.body.tools as unknown[];
    assertEquals(tools, [{
      type: "function",
      function: {
        name: "lookup",
        description: "Looks a word up",
        parameters: {
          type: "object",
          properties: {
            word: { type: "string", description: "The word" },
            limit: { type: "number" },
          },
          required: ["word"],
        },
      },
    }]);
    await client.close();
  } finally {
    await stack.close();
  }
});
