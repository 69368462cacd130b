/**
 * The client side every Deno relay shares: `Deno.serve` + `upgradeWebSocket`,
 * a `connected` greeting, `pong` for `ping`, and for each query one
 * `{"type":"response","id","delta","done":false,"seq","timestamp"}` frame
 * per token and a final `done: true` frame with the whole text. No
 * validation, sessions, replay log, timeouts, retries or backpressure: a
 * relay is the least a server must do, so that what the gateway spends above
 * it is the price of those. Relays differ only in how they read the
 * upstream. Same control channel as the other servers (`control.ts`).
 *
 * @module
 */
import { serveControl } from "../control.ts";

/** Reads one answer from the upstream, calling `onDelta` per token. */
export type Relay = (content: string, onDelta: (delta: string) => void) => Promise<void>;

/**
 * The stand-in's base URL, from `BENCH_UPSTREAM_URL`.
 *
 * @example
 * ```ts
 * const url = `${upstreamUrl()}/chat/completions`;
 * ```
 */
export function upstreamUrl(): string {
  const url = Deno.env.get("BENCH_UPSTREAM_URL");
  if (!url) throw new Error("BENCH_UPSTREAM_URL is required");
  return url;
}

/**
 * Cuts complete SSE events off `buffered`, calls `onDelta` with each event's
 * text, and returns what is left (an event still arriving).
 *
 * @example
 * ```ts
 * let buffered = "";
 * buffered = splitEvents(buffered + decoder.decode(chunk, { stream: true }), send);
 * ```
 */
export function splitEvents(buffered: string, onDelta: (delta: string) => void): string {
  let end: number;
  while ((end = buffered.indexOf("\n\n")) >= 0) {
    const event = buffered.slice(0, end);
    buffered = buffered.slice(end + 2);
    if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
    const delta = JSON.parse(event.slice(6)).choices?.[0]?.delta?.content;
    if (typeof delta === "string" && delta.length > 0) onDelta(delta);
  }
  return buffered;
}

/**
 * Serves WebSocket clients with `relay` until stdin closes.
 *
 * @example
 * ```ts
 * await serveRelay(async (content, onDelta) => {
 *   for (const word of content.split(" ")) onDelta(word);
 * });
 * ```
 */
export async function serveRelay(relay: Relay): Promise<void> {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      let seq = 0;
      const frame = (body: Record<string, unknown>) =>
        socket.send(JSON.stringify({ ...body, seq: ++seq, timestamp: new Date().toISOString() }));
      socket.onopen = () => frame({ type: "notification", event: "connected" });
      socket.onmessage = (e) => {
        const msg = JSON.parse(e.data);
        if (msg.type === "ping") return frame({ type: "pong", id: msg.id });
        let text = "";
        relay(msg.content, (delta) => {
          text += delta;
          frame({ type: "response", id: msg.id, delta, done: false });
        }).then(
          () => frame({ type: "response", id: msg.id, content: text, done: true }),
          () => socket.close(1011),
        );
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
}
