/**
 * The Cloudflare peer of the benchmark: a minimal Agents SDK agent that does
 * what the gateway does on the measured paths. One agent (a Durable Object
 * with SQLite) per client name, reached at `/agents/relay-agent/<name>`:
 *
 * - on connect it sends a `connected` notification;
 * - `{"type":"ping","id"}` gets `{"type":"pong","id"}`;
 * - `{"type":"query","id","content"}` gets a `thinking` status, then one
 *   `response` delta frame per upstream token, then the final frame, read
 *   from the same OpenRouter stand-in the gateway uses (SSE over HTTP).
 *
 * Every frame carries `seq` and `timestamp`, like the gateway's. The SDK's own
 * protocol frames (identity, state, MCP lists) are turned off so that both
 * sides send the same frames.
 *
 * Bundled by wrangler (esbuild), not by Deno: the only import is the SDK.
 */
import { Agent, type Connection, routeAgentRequest } from "agents";

interface Env {
  /** Base URL of the stand-in, ending in `/api/v1` (a plain-text binding). */
  UPSTREAM_URL: string;
  // deno-lint-ignore no-explicit-any
  RelayAgent: any;
}

const SYSTEM_PROMPT = "You are agent_websocket, a helpful assistant. Answer clearly and concisely.";
const MODEL = "openai/gpt-4-turbo";

export class RelayAgent extends Agent<Env> {
  #seq = 0;

  override shouldSendProtocolMessages(): boolean {
    return false;
  }

  #send(connection: Connection, frame: Record<string, unknown>): void {
    frame.seq = ++this.#seq;
    frame.timestamp = new Date().toISOString();
    connection.send(JSON.stringify(frame));
  }

  override onConnect(connection: Connection): void {
    this.#send(connection, {
      type: "notification",
      event: "connected",
      content: `Connected to the Agents SDK peer. Session ID: ${this.name}`,
      session_id: this.name,
    });
  }

  override async onMessage(connection: Connection, message: string | ArrayBuffer): Promise<void> {
    if (typeof message !== "string") return;
    let frame: { type?: string; id?: string; content?: string; stream?: boolean };
    try {
      frame = JSON.parse(message);
    } catch {
      this.#send(connection, { type: "error", code: "invalid_json", message: "Not JSON" });
      return;
    }
    if (frame.type === "ping") {
      this.#send(connection, { type: "pong", id: frame.id });
    } else if (frame.type === "query" && typeof frame.content === "string") {
      await this.#relay(connection, frame.id ?? crypto.randomUUID(), frame.content);
    } else {
      this.#send(connection, { type: "error", code: "invalid_message", message: "Unknown frame" });
    }
  }

  async #relay(connection: Connection, id: string, content: string): Promise<void> {
    const started = Date.now();
    this.#send(connection, { type: "status", id, state: "thinking", content: "Thinking..." });
    const res = await fetch(`${this.env.UPSTREAM_URL}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify({
        model: MODEL,
        messages: [{ role: "system", content: SYSTEM_PROMPT }, { role: "user", content }],
        stream: true,
        stream_options: { include_usage: true },
        temperature: 0.7,
        max_tokens: 1500,
      }),
    });
    if (!res.ok || !res.body) {
      this.#send(connection, {
        type: "error",
        id,
        code: "upstream_error",
        message: `The model provider failed (${res.status})`,
      });
      return;
    }
    let text = "";
    let firstTokenMs: number | null = null;
    let finish = "stop";
    let usage: unknown = null;
    let buffered = "";
    const decoder = new TextDecoder();
    const reader = res.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      // One SSE event ends at a blank line; keep the unfinished tail for the next read.
      let end: number;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.usage) usage = chunk.usage;
          const choice = chunk.choices?.[0];
          const delta = choice?.delta?.content;
          if (typeof delta === "string" && delta.length > 0) {
            if (firstTokenMs === null) firstTokenMs = Date.now() - started;
            text += delta;
            this.#send(connection, { type: "response", id, delta, done: false });
          }
          if (typeof choice?.finish_reason === "string") finish = choice.finish_reason;
        }
      }
    }
    this.#send(connection, {
      type: "response",
      id,
      content: text,
      done: true,
      model: MODEL,
      finish_reason: finish,
      usage,
      timing: { first_token_ms: firstTokenMs, total_ms: Date.now() - started },
    });
  }
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    return (await routeAgentRequest(request, env)) ?? new Response("Not found", { status: 404 });
  },
};
