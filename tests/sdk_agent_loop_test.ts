/**
 * The agent loop through the client SDK against the real server: a client
 * tool registered once and answered automatically, a server tool approved by
 * `onApproval`, and reasoning on the ask handle.
 */
import { AgentClient } from "../client/mod.ts";
import { assert, assertEquals } from "./assert.ts";
import { startStack } from "./helpers.ts";
import { deleteFileTool } from "./fixtures/delete_file.ts";

const FAST = {
  reconnect: { initialDelayMs: 20, maxDelayMs: 100, factor: 2, maxAttempts: 50 },
  connectTimeoutMs: 2000,
};

Deno.test("sdk + server: a client tool runs in the client, a server tool waits for onApproval", async () => {
  const deleteFile = deleteFileTool();
  const stack = await startStack({}, {}, { agent: { tools: { delete_file: deleteFile.tool } } });
  const asked: string[] = [];
  const client = new AgentClient(stack.wsUrl, {
    ...FAST,
    tools: {
      get_location: {
        description: "Where the user is",
        parameters: { type: "object", properties: {} },
        execute: () => ({ city: "Lisbon" }),
      },
    },
    onApproval: (call) => {
      asked.push(call.tool);
      return call.tool === "delete_file";
    },
  });
  try {
    await client.connect();
    stack.sim.script(
      {
        kind: "stream",
        reasoning: ["Need the place."],
        toolCalls: [{ id: "loc", name: "get_location", arguments: "{}" }],
      },
      {
        kind: "stream",
        tokens: ["Lisbon. "],
        toolCalls: [{ id: "del", name: "delete_file", arguments: '{"path":"/tmp/x"}' }],
      },
      { kind: "stream", tokens: ["Deleted."] },
    );
    const handle = client.ask("where am I, then delete /tmp/x");
    const final = await handle.response;
    assertEquals(final.content, "Lisbon. Deleted.");
    assertEquals([final.iterations, final.tool_calls], [3, 2]);
    assertEquals(final.reasoning, "Need the place.");
    assertEquals(asked, ["delete_file"], "asked once, for the tool that needs it");
    assertEquals(deleteFile.runs(), 1);
    // The client declared its tool with the query, and its result reached the model.
    const first = stack.sim.requests[0].body;
    assert(first.tools!.some((t) => t.function.name === "get_location"), "declared");
    const second = stack.sim.requests[1].body.messages!;
    assertEquals(second.at(-1)!.content, '{"city":"Lisbon"}');
    const third = stack.sim.requests[2].body.messages!;
    assertEquals(JSON.parse(third.at(-1)!.content!), { deleted: "/tmp/x" });
  } finally {
    client.close();
    await stack.close();
  }
});
