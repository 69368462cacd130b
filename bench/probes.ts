/**
 * Time-to-first-token probes, sent one at a time while background load runs:
 * through a WebSocket server (gateway or peer), or straight to the stand-in
 * over HTTP, the way the gateway itself asks it. Both return the time from
 * sending the question to the first token, and to the end of the answer.
 *
 * @module
 */
import type { Target } from "./target.ts";
import { openSocket } from "./sockets.ts";

/** One probe's timings, in milliseconds. */
export interface ProbeTiming {
  /** Until the first token (for a `stream: false` query: until the answer). */
  firstMs: number;
  /** Until the end of the answer. */
  totalMs: number;
}

/** What the gateway sends upstream for a one-message conversation (MAX_HISTORY=0). */
export function upstreamBody(content: string): string {
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

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A WebSocket client that asks one question at a time and times it. */
export class WsProbe {
  #n = 0;
  #current: {
    id: string;
    start: number;
    first: number | null;
    resolve: (t: ProbeTiming) => void;
    reject: (e: Error) => void;
  } | null = null;

  private constructor(readonly ws: WebSocket, readonly name: string) {
    ws.addEventListener("message", (e) => this.#onFrame(e.data as string));
    ws.addEventListener("close", () => this.#current?.reject(new Error(`${name}: probe closed`)));
  }

  /** Connects a probe to a target, as its own client (its own session or agent). */
  static async open(target: Target, index: number): Promise<WsProbe> {
    const ws = await openSocket(target.socketUrl(index), { firstFrame: target.greets });
    return new WsProbe(ws, target.name);
  }

  #onFrame(data: string): void {
    const now = performance.now();
    const q = this.#current;
    if (!q) return;
    const frame = JSON.parse(data);
    if (frame.id !== q.id) return;
    if (frame.type === "error") {
      this.#current = null;
      q.reject(new Error(`${this.name}: ${frame.code}: ${frame.message}`));
    } else if (frame.type === "tool_call" && frame.executor === "client") {
      this.ws.send(JSON.stringify({
        type: "tool_result",
        id: q.id,
        tool_call_id: frame.tool_call_id,
        result: { ok: true },
      }));
    } else if (frame.type === "response" && frame.done === false) {
      q.first ??= now;
    } else if (frame.type === "response" && frame.done === true) {
      this.#current = null;
      q.resolve({ firstMs: (q.first ?? now) - q.start, totalMs: now - q.start });
    }
  }

  /** Asks one question and resolves when its answer is complete. */
  ask(content: string, stream = true, timeoutMs = 30_000): Promise<ProbeTiming> {
    return this.#ask(
      stream ? { type: "query", content } : { type: "query", content, stream: false },
      timeoutMs,
    );
  }

  /**
   * Asks with a client tool declared; answers its `tool_call` at once, as an
   * app would, and resolves when the answer after it is complete.
   */
  askWithTool(content: string, timeoutMs = 30_000): Promise<ProbeTiming> {
    return this.#ask(
      { type: "query", content, tools: [{ name: "bench_tool", description: "A bench tool" }] },
      timeoutMs,
    );
  }

  #ask(query: Record<string, unknown>, timeoutMs: number): Promise<ProbeTiming> {
    if (this.#current) throw new Error("one probe at a time");
    const id = `probe-${this.#n++}`;
    const frame = JSON.stringify({ ...query, id });
    const timing = new Promise<ProbeTiming>((resolve, reject) => {
      this.#current = { id, start: performance.now(), first: null, resolve, reject };
    });
    this.ws.send(frame);
    return withTimeout(timing, timeoutMs, `${this.name} probe`);
  }

  close(): void {
    this.#current = null;
    this.ws.close();
  }
}

/**
 * Asks the stand-in directly, parsing its SSE until the first event that
 * carries text, then reading the rest of the answer.
 */
export function directProbe(
  upstreamUrl: string,
  content: string,
  timeoutMs = 30_000,
): Promise<ProbeTiming> {
  const run = async (): Promise<ProbeTiming> => {
    const start = performance.now();
    const res = await fetch(`${upstreamUrl}/chat/completions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "text/event-stream",
        authorization: "Bearer sk-bench-not-a-real-key",
      },
      body: upstreamBody(content),
    });
    if (!res.ok || !res.body) throw new Error(`stand-in answered ${res.status}`);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let first: number | null = null;
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (first !== null) continue;
      buffered += decoder.decode(value, { stream: true });
      let end: number;
      while (first === null && (end = buffered.indexOf("\n\n")) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
        const text = JSON.parse(event.slice(6)).choices?.[0]?.delta?.content;
        if (typeof text === "string" && text.length > 0) first = performance.now();
      }
    }
    const end = performance.now();
    if (first === null) throw new Error("stand-in answer had no token");
    return { firstMs: first - start, totalMs: end - start };
  };
  return withTimeout(run(), timeoutMs, "direct probe");
}
