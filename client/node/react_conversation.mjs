// Two tabs of one conversation, as React components under Node with react-test-renderer,
// against the real server (tests/npm_package_test.ts starts it): both show how many are in the
// conversation, and what one asks streams into the other, marked as not its own. Prints
// "ok <step>" lines and exits non-zero on the first failure; no act(), the script waits for
// what is shown, with a deadline.
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

const chats = {};
function Tab({ name }) {
  const chat = useAgentChat(url, {
    WebSocket,
    conversation: "react-room",
    reconnect: { initialDelayMs: 20, maxDelayMs: 100, maxAttempts: 20 },
  });
  chats[name] = chat;
  return createElement(
    "main",
    null,
    createElement("span", { "data-role": "connection" }, chat.agent.state),
    createElement("span", { "data-role": "sockets" }, String(chat.agent.sockets ?? "")),
    ...chat.messages.map((m) =>
      createElement(
        "p",
        {
          key: m.id,
          "data-role": m.role === "user"
            ? (m.own ? "prompt" : "their-question")
            : m.own
            ? "answer"
            : "theirs",
        },
        m.content,
      )
    ),
  );
}

const a = TestRenderer.create(createElement(Tab, { name: "a" }));
await waitFor(() => shown(a, "connection")[0] === "open", "tab a to open");
const b = TestRenderer.create(createElement(Tab, { name: "b" }));
await waitFor(() => shown(b, "connection")[0] === "open", "tab b to open");
await waitFor(
  () => shown(a, "sockets")[0] === "2" && shown(b, "sockets")[0] === "2",
  "both tabs to count 2",
);
assert.equal(chats.a.agent.conversation, "react-room");
say(`ok presence (React ${version})`);

chats.a.send("[react-room]");
await waitFor(() => shown(a, "answer")[0] === expected, "tab a's answer");
await waitFor(() => shown(b, "theirs")[0] === expected, "tab b to show tab a's answer");
assert.deepEqual(shown(b, "prompt"), [], "b has no question of its own");
assert.deepEqual(shown(b, "their-question"), ["[react-room]"], "b shows what tab a asked");
assert.equal(chats.b.messages.at(-1).done, true);
say("ok shared");

b.unmount();
await waitFor(() => shown(a, "sockets")[0] === "1", "tab a to count 1 after b closed");
a.unmount();
say("ok left");
