// Drives agent-websocket-client/react under Node with react-test-renderer against the real
// server (tests/npm_package_test.ts starts it and scripts the stand-in upstream): connect, a
// streamed answer, a cancel, unmount. Asserts what a user of the page would see; prints
// "ok <step>" lines and exits non-zero on the first failure. React renders on its own schedule,
// as in a browser (no act()): the script waits for what is shown, with a deadline. The test
// fails on anything React prints to stderr (a warning there is a bug in the hooks), except the
// deprecation notice of react-test-renderer itself under React 19.
import assert from "node:assert/strict";
import { createElement, version } from "react";
import TestRenderer from "react-test-renderer";
import WebSocket from "ws";
import { useAgentChat } from "agent-websocket-client/react";
import { shown, waitFor } from "./react_testing.mjs";

const consoleError = console.error;
console.error = (...args) => {
  if (!String(args[0]).startsWith("react-test-renderer is deprecated")) consoleError(...args);
};
const [url, expected] = process.argv.slice(2);
const say = (line) => process.stdout.write(line + "\n");

let chat;
const renders = [];
function Chat() {
  chat = useAgentChat(url, {
    WebSocket,
    reconnect: { initialDelayMs: 20, maxDelayMs: 100, maxAttempts: 20 },
  });
  const last = chat.messages.at(-1);
  renders.push({ status: chat.status, answer: last?.role === "assistant" ? last.content : "" });
  return createElement(
    "main",
    null,
    createElement("span", { "data-role": "connection" }, chat.agent.state),
    createElement("span", { "data-role": "status" }, chat.status),
    ...chat.messages.map((m) =>
      createElement(
        "p",
        { key: m.id, "data-role": m.role === "user" ? "prompt" : "answer" },
        m.content,
      )
    ),
  );
}

const renderer = TestRenderer.create(createElement(Chat));
await waitFor(() => shown(renderer, "connection")[0] === "open", "the connection to open");
say(`ok connected (React ${version})`);

renders.length = 0;
chat.send("[react-stream]");
await waitFor(
  () => shown(renderer, "answer")[0] === expected && shown(renderer, "status")[0] === "ready",
  "the whole answer, and the chat ready again",
);
assert.deepEqual(shown(renderer, "prompt"), ["[react-stream]"]);
assert.deepEqual(shown(renderer, "answer"), [expected]);
const partial = renders.find((r) => r.status === "streaming" && r.answer && r.answer !== expected);
assert.ok(partial, "some render showed the answer part-way, while streaming");
assert.ok(expected.startsWith(partial.answer));
assert.ok(renders.some((r) => r.status === "submitted"), "a render showed the query submitted");
say("ok streamed");

chat.send("[react-cancel]");
await waitFor(() => (shown(renderer, "answer")[1] ?? "").length > 0, "the second answer to start");
chat.cancel();
await waitFor(
  () => chat.messages.at(-1).done && shown(renderer, "status")[0] === "ready",
  "the cancelled answer to end",
);
const cancelled = chat.messages.at(-1);
assert.equal(cancelled.finishReason, "cancelled");
assert.equal(shown(renderer, "status")[0], "ready");
assert.equal(shown(renderer, "answer")[1], cancelled.content, "the partial answer stays shown");
say("ok cancelled");

const client = chat.agent.client;
renderer.unmount();
await waitFor(() => client.state === "closed", "unmounting to close the connection");
say("ok unmounted");
