/**
 * An offline stand-in for OpenRouter's chat completions API, speaking its real
 * wire format: SSE with `: OPENROUTER PROCESSING` keep-alive comments, usage in
 * the last chunk (with `choices` empty or not), `data: [DONE]`, HTTP errors as
 * `{error:{code,message,metadata}}` with `Retry-After`, and in-stream errors in
 * the three shapes seen in the wild. `deno task dev` answers with it when no
 * API key is set; tests script it per scenario. It is never deployed.
 *
 * @module
 */

import { linkSignals } from "../supabase/functions/_shared/platform/signals.ts";

/** What the simulator does with one request. */
export type Scenario =
  | {
    kind: "stream";
    /** Tokens to send; default: a reply derived from the last user message. */
    tokens?: string[];
    /** Gap between tokens; default: the simulator's `tokenDelayMs`. */
    gapMs?: number;
    /** Delay before the first token, filled with keep-alive comments. */
    firstTokenDelayMs?: number;
    /** Where usage goes: its own chunk with `choices: []`, the finish chunk, or nowhere. */
    usage?: "empty_choices" | "with_choices" | "none";
    finishReason?: string;
    /** End the body without `data: [DONE]` (after the finish chunk). */
    omitDone?: boolean;
    /** End the body cleanly after the tokens, with no finish reason and no `[DONE]`. */
    endAbruptly?: boolean;
    /** Interleave malformed SSE lines and split chunks mid-line. */
    malformed?: boolean;
    model?: string;
    /** Reasoning streamed before the answer, as `delta.reasoning`. */
    reasoning?: string[];
    /** Send it as `reasoning_details` text instead of `delta.reasoning`. */
    reasoningDetails?: boolean;
    /**
     * Tool calls the model asks for, after the tokens; the stream then ends with
     * `finish_reason: "tool_calls"`. `arguments` is sent as is (it may be bad JSON),
     * split into `fragments` pieces (default 3), as OpenAI-compatible providers do.
     */
    toolCalls?: { id?: string; name: string; arguments: string; fragments?: number }[];
    /**
     * With `toolCalls` in a `when` rule: ask for the tools once per user
     * message; once their results are in, the rule steps aside for the next.
     */
    toolCallsOnce?: boolean;
  }
  | {
    kind: "http_error";
    status: number;
    /** Seconds for the `Retry-After` header. */
    retryAfter?: number;
    message?: string;
  }
  | {
    kind: "stream_error";
    /**
     * `string_code`: `error.code` a string and `finish_reason: "error"`;
     * `int_code`: `error.code` a number with `metadata.error_type`;
     * `bare`: only `{error}`, no `choices`.
     */
    shape: "string_code" | "int_code" | "bare";
    /** Tokens sent before the error; 0 makes it the very first frame. */
    afterTokens?: number;
    code?: string | number;
  }
  /** Accept the request and never answer, not even headers. */
  | { kind: "hang" }
  /** Send some tokens, then stall forever. */
  | { kind: "stall"; afterTokens: number }
  /** Send some tokens, then cut the connection. */
  | { kind: "drop"; afterTokens: number };

/** A request the simulator received, for assertions. */
export interface RecordedRequest {
  headers: Headers;
  body: {
    model?: string;
    models?: string[];
    messages?: {
      role: string;
      content: string | null;
      tool_calls?: { id: string; function: { name: string; arguments: string } }[];
      tool_call_id?: string;
    }[];
    tools?: { type: string; function: { name: string; description?: string } }[];
    stream?: boolean;
    stream_options?: { include_usage?: boolean };
    user?: string;
    [k: string]: unknown;
  };
}

/** Options for {@linkcode startSimulator}. */
export interface SimulatorOptions {
  port?: number;
  /** Gap between tokens of the default reply. */
  tokenDelayMs?: number;
  /** The API key to require; requests without it get 401. Default: accept any. */
  apiKey?: string;
}

/** A running simulator. */
export interface Simulator {
  /** Base URL to use as `OPENROUTER_BASE_URL`, ending in `/api/v1`. */
  url: string;
  requests: RecordedRequest[];
  /** Queues scenarios; each request takes the next one (else the default reply). */
  script(...scenarios: Scenario[]): void;
  /** Requests whose last user message contains `marker` get `scenario` (checked first). */
  when(marker: string, scenario: Scenario): void;
  /** Streams currently open. */
  readonly openStreams: number;
  close(): Promise<void>;
}

const encoder = new TextEncoder();

/** Announced by a `drop` response and never reached, so the body ends mid-stream. */
const DROP_CONTENT_LENGTH = 1 << 30;

/**
 * The default reply: deterministic, derived from the question, streamed a
 * word at a time so a newcomer sees tokens arrive.
 *
 * @example
 * ```ts
 * defaultReply("What is Deno?"); // ["Simulated ", "answer ", ...]
 * ```
 */
export function defaultReply(question: string): string[] {
  const quoted = question.length > 60 ? `${question.slice(0, 57)}...` : question;
  const text = `Simulated answer to "${quoted}". This reply comes from the offline ` +
    `simulator, streamed word by word the way OpenRouter streams tokens. Set ` +
    `OPENROUTER_API_KEY to talk to a real model.`;
  return text.split(/(?<= )/);
}

/**
 * Starts the simulator on loopback.
 *
 * @example
 * ```ts
 * const sim = startSimulator({ tokenDelayMs: 5 });
 * sim.script({ kind: "http_error", status: 429, retryAfter: 1 });
 * // point OPENROUTER_BASE_URL at sim.url
 * await sim.close();
 * ```
 */
export function startSimulator(opts: SimulatorOptions = {}): Simulator {
  const queue: Scenario[] = [];
  const rules: [string, Scenario][] = [];
  const requests: RecordedRequest[] = [];
  const shutdown = new AbortController();
  let openStreams = 0;
  let counter = 0;

  function pick(body: RecordedRequest["body"]): Scenario {
    const last = [...(body.messages ?? [])].reverse().find((m) => m.role === "user")?.content ??
      "";
    const answered = body.messages?.at(-1)?.role === "tool";
    for (const [marker, scenario] of rules) {
      if (!last.includes(marker)) continue;
      if (answered && scenario.kind === "stream" && scenario.toolCallsOnce) continue;
      return scenario;
    }
    return queue.shift() ?? defaultScenario(body);
  }

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    if (req.method !== "POST" || !url.pathname.endsWith("/chat/completions")) {
      return Response.json({ error: { code: 404, message: "Not Found" } }, { status: 404 });
    }
    if (opts.apiKey && req.headers.get("authorization") !== `Bearer ${opts.apiKey}`) {
      return errorResponse(401, "No auth credentials found");
    }
    let body: RecordedRequest["body"];
    try {
      body = await req.json();
    } catch {
      return errorResponse(400, "Invalid JSON body");
    }
    requests.push({ headers: req.headers, body });
    const scenario = pick(body);
    const id = `gen-sim-${++counter}`;
    const model = (scenario.kind === "stream" && scenario.model) || body.model ||
      "openai/gpt-4-turbo";
    const question = [...(body.messages ?? [])].reverse().find((m) => m.role === "user")
      ?.content ?? "";
    const toolCalls = scenario.kind === "stream" ? scenario.toolCalls ?? [] : [];

    if (scenario.kind === "http_error") {
      const headers: Record<string, string> = {};
      if (scenario.retryAfter !== undefined) headers["retry-after"] = String(scenario.retryAfter);
      return errorResponse(
        scenario.status,
        scenario.message ?? `Simulated ${scenario.status}`,
        headers,
      );
    }
    if (scenario.kind === "hang") {
      // Only closing the simulator ends a hang (req.signal would warn under Deno 2.9).
      await new Promise<void>((resolve) => {
        shutdown.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      return new Response(null, { status: 499 });
    }
    if (body.stream === false) {
      const text = defaultReply(question ?? "").join("");
      return Response.json({
        id,
        model,
        object: "chat.completion",
        choices: [{
          index: 0,
          message: { role: "assistant", content: text },
          finish_reason: "stop",
        }],
        usage: usageFor(body, text.split(" ").length),
      });
    }

    const chunk = (delta: Record<string, unknown>, finish: string | null, extra = {}) =>
      `data: ${
        JSON.stringify({
          id,
          provider: "Simulator",
          model,
          object: "chat.completion.chunk",
          created: Math.floor(Date.now() / 1000),
          choices: [{ index: 0, delta, finish_reason: finish, native_finish_reason: finish }],
          ...extra,
        })
      }\n\n`;

    // The client going away cancels the body; req.signal is not used for that
    // because Deno also aborts it when a response completes normally.
    const cancelled = new AbortController();
    const stream = new ReadableStream<Uint8Array>({
      cancel() {
        cancelled.abort();
      },
      async start(controller) {
        openStreams++;
        const link = linkSignals(cancelled.signal, shutdown.signal);
        const gone = link.signal;
        const send = (text: string) => {
          if (!gone.aborted) controller.enqueue(encoder.encode(text));
        };
        const wait = (ms: number) =>
          new Promise<void>((resolve) => {
            if (ms <= 0 || gone.aborted) return resolve();
            const onAbort = () => {
              clearTimeout(t);
              resolve();
            };
            // The listener goes when the timer fires: one per token would pile up otherwise.
            const t = setTimeout(() => {
              gone.removeEventListener("abort", onAbort);
              resolve();
            }, ms);
            gone.addEventListener("abort", onAbort, { once: true });
          });
        try {
          send(": OPENROUTER PROCESSING\n\n");
          const tokens = scenario.kind === "stream" && scenario.tokens
            ? scenario.tokens
            : toolCalls.length > 0
            ? []
            : defaultReply(question ?? "");
          const gap = scenario.kind === "stream" && scenario.gapMs !== undefined
            ? scenario.gapMs
            : opts.tokenDelayMs ?? 20;
          if (scenario.kind === "stream" && scenario.reasoning) {
            for (const [i, thought] of scenario.reasoning.entries()) {
              if (i > 0) await wait(gap);
              send(chunk(
                scenario.reasoningDetails
                  ? { reasoning_details: [{ type: "reasoning.text", text: thought, index: 0 }] }
                  : { reasoning: thought },
                null,
              ));
            }
          }
          if (scenario.kind === "stream" && scenario.firstTokenDelayMs) {
            const until = Date.now() + scenario.firstTokenDelayMs;
            while (!gone.aborted && Date.now() < until) {
              await wait(Math.min(100, until - Date.now()));
              send(": OPENROUTER PROCESSING\n\n");
            }
          }
          const limit = scenario.kind === "stream"
            ? tokens.length
            : scenario.kind === "stream_error"
            ? scenario.afterTokens ?? 0
            : scenario.afterTokens;
          for (let i = 0; i < limit && !gone.aborted; i++) {
            if (i > 0) await wait(gap);
            const piece = chunk(
              i === 0 ? { role: "assistant", content: tokens[i % tokens.length] } : {
                content: tokens[i % tokens.length],
              },
              null,
            );
            if (scenario.kind === "stream" && scenario.malformed) {
              send("data: {not json at all\n\n");
              send("event: surprise\nretry: oops\ngarbage line without a colon\n\n");
              // Split the real chunk mid-line and use CRLF endings.
              const crlf = piece.replace(/\n/g, "\r\n");
              const cut = Math.floor(crlf.length / 2);
              send(crlf.slice(0, cut));
              await wait(1);
              send(crlf.slice(cut));
            } else {
              send(piece);
            }
          }
          if (gone.aborted) return;
          switch (scenario.kind) {
            case "stall":
              await new Promise((resolve) =>
                gone.addEventListener("abort", resolve, { once: true })
              );
              return;
            case "drop":
              // Ending the body short of its announced content-length makes Deno cut the
              // connection, as a dropped one looks to the client. Erroring the stream would
              // too, but Deno's HTTP server then prints the error with a stack trace.
              return;
            case "stream_error":
              send(streamError(scenario, id, model));
              send("data: [DONE]\n\n");
              return;
            case "stream": {
              for (const [index, call] of toolCalls.entries()) {
                const n = Math.max(1, call.fragments ?? 3);
                const size = Math.ceil(call.arguments.length / n);
                send(chunk({
                  tool_calls: [{
                    index,
                    id: call.id ?? `call_sim_${counter}_${index}`,
                    type: "function",
                    function: { name: call.name, arguments: "" },
                  }],
                }, null));
                for (let at = 0; at < call.arguments.length; at += size) {
                  await wait(gap);
                  send(chunk({
                    tool_calls: [{
                      index,
                      function: { arguments: call.arguments.slice(at, at + size) },
                    }],
                  }, null));
                }
              }
              if (scenario.endAbruptly) return;
              const usage = usageFor(body, tokens.length);
              const where = scenario.usage ?? "empty_choices";
              const finish = scenario.finishReason ??
                (toolCalls.length > 0 ? "tool_calls" : "stop");
              send(chunk({ content: "" }, finish, where === "with_choices" ? { usage } : {}));
              if (where === "empty_choices") {
                send(
                  `data: ${
                    JSON.stringify({
                      id,
                      model,
                      object: "chat.completion.chunk",
                      choices: [],
                      usage,
                    })
                  }\n\n`,
                );
              }
              if (!scenario.omitDone) send("data: [DONE]\n\n");
              return;
            }
          }
        } finally {
          link.dispose();
          openStreams--;
          try {
            controller.close();
          } catch {
            // Already errored or closed.
          }
        }
      },
    });
    return new Response(stream, {
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        "x-generation-id": id,
        ...(scenario.kind === "drop" ? { "content-length": String(DROP_CONTENT_LENGTH) } : {}),
      },
    });
  }

  const server = Deno.serve(
    { port: opts.port ?? 0, hostname: "127.0.0.1", onListen: () => {} },
    handle,
  );
  const addr = server.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${addr.port}/api/v1`,
    requests,
    script: (...s) => void queue.push(...s),
    when: (marker, scenario) => void rules.push([marker, scenario]),
    get openStreams() {
      return openStreams;
    },
    async close() {
      shutdown.abort();
      await server.shutdown();
    },
  };
}

/**
 * What the simulator does when nothing is scripted: answers the question, and
 * — so `deno task dev` shows the agent loop without an account — calls an
 * offered tool whose name the question mentions ("what time is it?" calls
 * `current_time`), then answers from what the tool returned.
 */
function defaultScenario(body: RecordedRequest["body"]): Scenario {
  const messages = body.messages ?? [];
  const last = messages[messages.length - 1];
  if (last?.role === "tool") {
    const results = [];
    for (let i = messages.length - 1; i >= 0 && messages[i].role === "tool"; i--) {
      results.unshift(String(messages[i].content ?? "").slice(0, 200));
    }
    const text = `Simulated answer from the tool results: ${results.join("; ")}. ` +
      `(The offline simulator called the tool for you.)`;
    return { kind: "stream", tokens: text.split(/(?<= )/) };
  }
  const question = String(last?.content ?? "").toLowerCase();
  const offered = (body.tools ?? []).map((t) => t.function.name);
  const wanted = offered.filter((name) =>
    question.includes(name.toLowerCase()) ||
    (name === "current_time" && /\btime\b/.test(question))
  );
  if (wanted.length > 0) {
    return {
      kind: "stream",
      toolCalls: wanted.map((name) => ({ name, arguments: "{}" })),
    };
  }
  return { kind: "stream" };
}

function usageFor(body: RecordedRequest["body"], completionTokens: number) {
  const prompt = (body.messages ?? []).reduce(
    (n, m) => n + String(m.content ?? "").split(/\s+/).length,
    0,
  );
  return {
    prompt_tokens: prompt,
    completion_tokens: completionTokens,
    total_tokens: prompt + completionTokens,
    // $1 per million tokens. Dividing keeps the decimal exact (0.000037), where multiplying
    // by 0.000001 showed float noise (0.000037000000000000004).
    cost: (prompt + completionTokens) / 1_000_000,
  };
}

function errorResponse(
  status: number,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(
    JSON.stringify({ error: { code: status, message, metadata: { provider_name: "Simulator" } } }),
    { status, headers: { "content-type": "application/json", ...headers } },
  );
}

function streamError(
  s: Extract<Scenario, { kind: "stream_error" }>,
  id: string,
  model: string,
): string {
  const base = {
    id,
    model,
    object: "chat.completion.chunk",
    created: Math.floor(Date.now() / 1000),
  };
  const failed = [{ index: 0, delta: { content: "" }, finish_reason: "error" }];
  switch (s.shape) {
    case "string_code":
      return `data: ${
        JSON.stringify({
          ...base,
          error: { code: s.code ?? "server_error", message: "Provider disconnected unexpectedly" },
          choices: failed,
        })
      }\n\n`;
    case "int_code":
      return `data: ${
        JSON.stringify({
          ...base,
          error: {
            code: s.code ?? 502,
            message: "Provider returned error",
            metadata: {
              error_type: "provider_error",
              provider_name: "Simulator",
              raw: "secret-raw-body",
            },
          },
          choices: failed,
        })
      }\n\n`;
    case "bare":
      return `data: ${
        JSON.stringify({ error: { code: s.code ?? 500, message: "Internal Server Error" } })
      }\n\n`;
  }
}
