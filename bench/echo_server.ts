/**
 * The reference for ping round trips and idle memory: a bare `Deno.serve`
 * WebSocket server that sends every text frame back unchanged and keeps
 * nothing per socket but the socket. In its own process, with the same
 * control channel as the gateway (`mem`, plus `sockets`).
 *
 * Run: `deno run -A --v8-flags=--expose-gc bench/echo_server.ts` (the bench does).
 *
 * @module
 */
import { serveControl } from "./control.ts";

let open = 0;

const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen: () => {} },
  (req) => {
    if ((req.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
      return new Response("Expected WebSocket request", { status: 400 });
    }
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => open++;
    socket.onclose = () => open--;
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  },
);

await serveControl({
  ready: { port: server.addr.port },
  maxSeconds: Number(Deno.env.get("BENCH_MAX_SECONDS") ?? "1800"),
  handlers: { sockets: () => open },
  onQuit: () => server.shutdown(),
});
