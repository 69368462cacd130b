// Drives the bundled client SDK under Node with the `ws` package, as a Node
// user would: tests/sdk_node_test.ts starts the server, bundles the SDK to
// dist/agent_client.js, runs this script and cuts the network mid-answer.
// Prints one JSON line per event so the test can follow along.
import WebSocket from "ws";
import { AgentClient } from "./dist/agent_client.js";

const url = process.argv[2];
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const client = new AgentClient(url, {
  WebSocket,
  reconnect: { initialDelayMs: 20, maxDelayMs: 100, factor: 2, maxAttempts: 50 },
});
client.on("open", (e) => say({ event: "open", resumed: e.resumed }));
await client.connect();
const handle = client.ask("[node]");
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
