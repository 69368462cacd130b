/**
 * The Node + `ws` relay: the same minimal relay as bench/relays/serve.ts
 * (a `connected` greeting, `pong` for `ping`, one delta frame per token and
 * a final frame), on Node's own HTTP server with the `ws` package, reading
 * the upstream with `node:http` through a keep-alive agent.
 *
 * Speaks the bench's control channel (bench/control.ts): one JSON ready line
 * on stdout, then one reply per request line on stdin (`mem` after a full GC
 * when run with --expose-gc); it exits when stdin closes.
 *
 * Usage: node --expose-gc relay.mjs --upstream http://127.0.0.1:PORT/api/v1
 */
import http from "node:http";
import { createInterface } from "node:readline";
import { WebSocketServer } from "ws";

const i = process.argv.indexOf("--upstream");
const upstream = i >= 0 ? process.argv[i + 1] : undefined;
if (!upstream) {
  console.error("usage: node relay.mjs --upstream URL");
  process.exit(2);
}
const url = `${upstream}/chat/completions`;
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

/** The gateway's upstream request for a one-message conversation (bench/probes.ts). */
function upstreamBody(content) {
  return JSON.stringify({
    model: "openai/gpt-4-turbo",
    messages: [
      {
        role: "system",
        content: "You are agent_websocket, a helpful assistant. Answer clearly and concisely.",
      },
      { role: "user", content },
    ],
    stream: true,
    stream_options: { include_usage: true },
    temperature: 0.7,
    max_tokens: 1500,
  });
}

function splitEvents(buffered, onDelta) {
  let end;
  while ((end = buffered.indexOf("\n\n")) >= 0) {
    const event = buffered.slice(0, end);
    buffered = buffered.slice(end + 2);
    if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
    const delta = JSON.parse(event.slice(6)).choices?.[0]?.delta?.content;
    if (typeof delta === "string" && delta.length > 0) onDelta(delta);
  }
  return buffered;
}

function relay(content, onDelta) {
  return new Promise((resolve, reject) => {
    const body = upstreamBody(content);
    const req = http.request(url, {
      method: "POST",
      agent,
      headers: {
        "content-type": "application/json",
        accept: "text/event-stream",
        "content-length": Buffer.byteLength(body),
      },
    }, (res) => {
      res.setEncoding("utf8");
      let buffered = "";
      res.on("data", (text) => buffered = splitEvents(buffered + text, onDelta));
      res.on("end", resolve);
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

const server = http.createServer((_req, res) => {
  res.writeHead(400).end("Expected WebSocket request");
});
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on("connection", (socket) => {
  let seq = 0;
  const frame = (body) =>
    socket.send(JSON.stringify({ ...body, seq: ++seq, timestamp: new Date().toISOString() }));
  frame({ type: "notification", event: "connected" });
  socket.on("message", (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.type === "ping") return frame({ type: "pong", id: msg.id });
    let text = "";
    relay(msg.content, (delta) => {
      text += delta;
      frame({ type: "response", id: msg.id, delta, done: false });
    }).then(
      () => frame({ type: "response", id: msg.id, content: text, done: true }),
      () => socket.close(1011),
    );
  });
});

server.listen(0, "127.0.0.1", () => {
  const write = (value) => process.stdout.write(JSON.stringify(value) + "\n");
  write({ ready: true, pid: process.pid, port: server.address().port });
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line.trim() === "") return;
    const req = JSON.parse(line);
    if (req.cmd === "quit") {
      write({ id: req.id, ok: true, result: null });
      process.exit(0);
    }
    if (req.cmd !== "mem") return write({ id: req.id, ok: false, error: `unknown ${req.cmd}` });
    if (req.args?.gc !== false) globalThis.gc?.();
    const m = process.memoryUsage();
    write({ id: req.id, ok: true, result: { rss: m.rss, heapUsed: m.heapUsed } });
  });
  lines.on("close", () => process.exit(0));
});
setTimeout(() => process.exit(3), 1800 * 1000).unref();
