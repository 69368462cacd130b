/**
 * The floor for CPU per relayed token: the least a Deno server must do to
 * relay the stand-in's SSE to a WebSocket client with the gateway's frame
 * shapes. Per query it makes one `fetch`; per token it reads the body with a
 * plain reader and `TextDecoder`, splits events, `JSON.parse`s the chunk and
 * sends one `{"type":"response","id","delta","done":false,"seq","timestamp"}`
 * frame. No validation, no sessions, no replay log, no timeouts, no retries,
 * no backpressure: whatever the gateway spends above this is the price of
 * those. Same control channel as the other servers.
 *
 * Run: `deno run -A bench/minimal_relay.ts` with `BENCH_UPSTREAM_URL` set.
 *
 * @module
 */
import { serveControl } from "./control.ts";
import { upstreamBody } from "./probes.ts";

const upstream = Deno.env.get("BENCH_UPSTREAM_URL");
if (!upstream) throw new Error("BENCH_UPSTREAM_URL is required");

async function relay(ws: WebSocket, id: string, content: string, next: () => number) {
  const frame = (body: Record<string, unknown>) =>
    ws.send(JSON.stringify({ ...body, seq: next(), timestamp: new Date().toISOString() }));
  const res = await fetch(`${upstream}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: upstreamBody(content),
  });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const delta = JSON.parse(event.slice(6)).choices?.[0]?.delta?.content;
      if (typeof delta === "string" && delta.length > 0) {
        text += delta;
        frame({ type: "response", id, delta, done: false });
      }
    }
  }
  frame({ type: "response", id, content: text, done: true });
}

const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen: () => {} },
  (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    let seq = 0;
    const next = () => ++seq;
    socket.onopen = () =>
      socket.send(JSON.stringify({ type: "notification", event: "connected", seq: next() }));
    socket.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type === "ping") {
        socket.send(JSON.stringify({ type: "pong", id: msg.id, seq: next() }));
      } else relay(socket, msg.id, msg.content, next).catch(() => socket.close(1011));
    };
    return response;
  },
);

await serveControl({
  ready: { port: server.addr.port },
  maxSeconds: Number(Deno.env.get("BENCH_MAX_SECONDS") ?? "1800"),
  handlers: {},
  onQuit: () => server.shutdown(),
});
