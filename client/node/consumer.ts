// Type-checked by tests/npm_package_test.ts against the installed package's .d.ts files: what a
// TypeScript user writes must compile, and misuse must not (the types are real, not `any`).
import {
  AgentClient,
  AgentError,
  type ClientTool,
  CLOSE,
  type FinalResponse,
  type ToolCallFrame,
} from "agent-websocket-client";
import { type ChatMessage, useAgentChat } from "agent-websocket-client/react";

const weather: ClientTool<{ city: string }> = {
  description: "Weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } } },
  execute: ({ city }, { signal }) => ({ city, aborted: signal.aborted }),
};
const client = new AgentClient("ws://127.0.0.1:8000", {
  tools: { weather },
  onApproval: (call) => call.tool !== "delete_everything",
});
const handle = client.ask("hi", { tools: ["weather"] });
const final: Promise<FinalResponse> = handle.response;
for await (const e of handle.events) {
  if (e.type === "tool_call") {
    const call: ToolCallFrame = e;
    console.log(call.tool_call_id, call.executor);
  }
}
const room = new AgentClient("ws://127.0.0.1:8000", { conversation: "room" });
room.on("presence", (p) => console.log(p.sockets, p.joined ?? p.left, room.socketId));
const names: string[] = (await room.conversations()).conversations.map((c) => c.name);
const scores: number[] = (await room.searchMemory("x", { limit: 2 })).results.map((h) => h.score);
const cleared: number = (await room.clearMemory()).cleared;
console.log(names, scores, cleared, room.isOwnQuery("q1"), room.sockets);
// @ts-expect-error the limit is a number
room.searchMemory("x", { limit: "5" });
const code: 4003 = CLOSE.tokenExpired;
const messages: ChatMessage[] = [];
console.log(final, code, messages, typeof useAgentChat, AgentError.name);
// @ts-expect-error content must be a string
client.ask(42);
// @ts-expect-error ratings are "up" or "down"
client.feedback(handle.id, "meh");
