// Drives useAgentChat's v1.1 side under Node against the SCRIPTED FAKE SERVER of
// tests/fake_agent_server.ts (the real server has no tools yet): reasoning, a server tool that
// needs approval (approved from the UI), and a client tool the hook runs by itself. Prints
// "ok <step>" lines; exits non-zero on the first failure.
import assert from "node:assert/strict";
import { createElement } from "react";
import TestRenderer from "react-test-renderer";
import WebSocket from "ws";
import { useAgentChat } from "agent-websocket-client/react";
import { shown, waitFor } from "./react_testing.mjs";

const consoleError = console.error;
console.error = (...args) => {
  if (!String(args[0]).startsWith("react-test-renderer is deprecated")) consoleError(...args);
};
const url = process.argv[2];
const say = (line) => process.stdout.write(line + "\n");

let chat;
const weatherCalls = [];
function Chat() {
  chat = useAgentChat(url, {
    WebSocket,
    tools: {
      get_weather: {
        description: "Weather in a city",
        parameters: { type: "object", properties: { city: { type: "string" } } },
        execute: ({ city }) => (weatherCalls.push(city), { city, celsius: -3 }),
      },
    },
  });
  const answer = chat.messages.findLast((m) => m.role === "assistant");
  return createElement(
    "main",
    null,
    createElement("span", { "data-role": "connection" }, chat.agent.state),
    createElement("i", { "data-role": "reasoning" }, answer?.reasoning ?? ""),
    ...(answer?.tools ?? []).map((t) =>
      createElement("li", { key: t.toolCallId, "data-role": "tool" }, `${t.tool}:${t.state}`)
    ),
    ...chat.approvals.map((a) =>
      createElement(
        "button",
        { key: `approve-${a.toolCallId}`, "data-role": "approval" },
        `Allow ${a.tool}?`,
      )
    ),
    createElement("p", { "data-role": "answer" }, answer?.content ?? ""),
  );
}

const renderer = TestRenderer.create(createElement(Chat));
await waitFor(() => shown(renderer, "connection")[0] === "open", "the connection to open");
chat.send("weather, after a lookup");
await waitFor(() => shown(renderer, "approval").length === 1, "the approval to be asked");
assert.deepEqual(shown(renderer, "approval"), ["Allow lookup?"]);
assert.deepEqual(shown(renderer, "tool"), ["lookup:awaiting_approval"]);
assert.equal(shown(renderer, "reasoning")[0], "Checking the weather.");
say("ok approval asked");

chat.approve(chat.approvals[0].toolCallId, true);
await waitFor(() => shown(renderer, "answer")[0] === "Oslo: -3 °C", "the answer");
assert.deepEqual(shown(renderer, "tool"), ["lookup:done", "get_weather:done"]);
assert.deepEqual(shown(renderer, "approval"), []);
assert.deepEqual(weatherCalls, ["Oslo"], "the client tool ran once");
say("ok tools shown");
renderer.unmount();
