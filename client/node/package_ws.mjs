// Runs the packed npm package under Node with the `ws` package, as a Node user would:
// tests/npm_package_test.ts installs the tarball that `npm pack` made, starts the server, runs
// this script and cuts the network mid-answer. One JSON line per event.
import WebSocket from "ws";
import { AgentClient } from "agent-websocket-client";

const url = process.argv[2];
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const client = new AgentClient(url, {
  WebSocket,
  reconnect: { initialDelayMs: 20, maxDelayMs: 100, factor: 2, maxAttempts: 50 },
});
client.on("open", (e) => say({ event: "open", resumed: e.resumed }));
await client.connect();
const handle = client.ask("[npm]");
let streamed = "";
let first = true;
for await (const delta of handle.deltas) {
  streamed += delta;
  if (first) say({ event: "first_delta" });
  first = false;
}
const final = await handle.response;
say({ event: "done", streamed, content: final.content, session: client.sessionId });
client.close();
