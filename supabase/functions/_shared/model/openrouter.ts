/**
 * The upstream client: one streamed chat completion against OpenRouter (or
 * any OpenAI-compatible server), with retries before the first token,
 * first-token and total timeouts, and every failure turned into an
 * {@linkcode UpstreamError} whose message is safe to show a user.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { ErrorCode, Usage } from "../protocol/frames.ts";
import type { Logger } from "../platform/log.ts";
import { fullJitterDelay, parseRetryAfter, sleep } from "../platform/backoff.ts";
import { readSse, SseEventTooLargeError } from "./sse.ts";
import { linkSignals } from "../platform/signals.ts";

/** One chat message as the upstream API takes it. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** What to ask the upstream. */
export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  /** A stable, non-identifying per-user id (OpenRouter's abuse isolation). */
  user?: string;
}

/** Hooks the caller observes a generation through. */
export interface StreamHooks {
  /** A returned promise pauses reading the upstream until it settles (backpressure). */
  onDelta(text: string): void | Promise<void>;
  onRetry(info: { attempt: number; delayMs: number; code: ErrorCode }): void;
}

/** A finished generation. */
export interface ChatResult {
  content: string;
  model: string;
  finishReason: string;
  usage: Usage | null;
  /** Milliseconds from the call to the first token; null when no token came. */
  firstTokenMs: number | null;
  attempts: number;
}

/**
 * A failure with a code a client can switch on and a message fit for a human:
 * never a raw upstream body, a stack trace or a secret.
 */
export class UpstreamError extends Error {
  /**
   * @example
   * ```ts
   * throw new UpstreamError("upstream_timeout", "The model took too long", true);
   * ```
   */
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
    readonly status?: number,
  ) {
    super(message);
    this.name = "UpstreamError";
  }
}

/** Streams one chat completion; see {@linkcode createUpstreamClient}. */
export interface UpstreamClient {
  stream(req: ChatRequest, hooks: StreamHooks, signal: AbortSignal): Promise<ChatResult>;
}

/** Why an attempt was aborted by us rather than by the caller. */
class Timeout extends Error {
  constructor(readonly which: "first_token" | "total") {
    super(which);
  }
}

/**
 * Maps an HTTP status (or the numeric code of an in-stream error) to an error.
 * `retryAfterMs` only matters for 429.
 */
function fromStatus(status: number, retryAfterMs?: number): UpstreamError {
  switch (status) {
    case 400:
      return new UpstreamError("upstream_error", "The model provider rejected the request", false);
    case 401:
      return new UpstreamError(
        "upstream_error",
        "The server's OpenRouter API key was rejected; the operator must fix it",
        false,
      );
    case 402:
      return new UpstreamError(
        "insufficient_credits",
        "The OpenRouter account is out of credits",
        false,
      );
    case 403:
      return new UpstreamError("upstream_error", "The model provider refused this request", false);
    case 404:
      return new UpstreamError("upstream_error", "The model is not available", false);
    case 408:
    case 504:
      return new UpstreamError("upstream_timeout", "The model provider timed out", true);
    case 429:
      return new UpstreamError(
        "upstream_rate_limited",
        "The model provider is rate limiting requests",
        true,
        retryAfterMs,
      );
    case 502:
    case 503:
      return new UpstreamError("upstream_unavailable", "The model provider is unavailable", true);
    default:
      return new UpstreamError(
        "upstream_error",
        `The model provider failed (${status})`,
        status >= 500,
      );
  }
}

/**
 * In-stream errors come in three shapes: a string code with
 * `finish_reason: "error"`, a numeric code with `metadata.error_type`, and a
 * bare `{error}` object. All carry a code we can map.
 */
function fromStreamError(error: Record<string, unknown>): UpstreamError {
  const code = error.code;
  if (typeof code === "number") return fromStatus(code);
  const text = `${typeof code === "string" ? code : ""} ${
    String((error.metadata as Record<string, unknown> | undefined)?.error_type ?? "")
  }`.toLowerCase();
  if (text.includes("rate")) return fromStatus(429);
  if (text.includes("timeout")) return fromStatus(408);
  if (text.includes("credit") || text.includes("payment")) return fromStatus(402);
  if (text.includes("unavailable") || text.includes("overloaded")) return fromStatus(503);
  return new UpstreamError("upstream_error", "The model provider failed mid-answer", true);
}

function toUpstreamError(err: unknown): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (err instanceof SseEventTooLargeError) {
    return new UpstreamError("upstream_error", "The model provider sent an oversized event", false);
  }
  if (err instanceof Timeout) {
    return new UpstreamError(
      "upstream_timeout",
      err.which === "first_token"
        ? "The model did not start answering in time"
        : "The model did not finish answering in time",
      true,
    );
  }
  // fetch and body reads throw TypeError (or Deno's errors) on network failure.
  return new UpstreamError("upstream_unavailable", "Could not reach the model provider", true);
}

/**
 * Creates the client. `fetchImpl` exists so the benchmark can count calls;
 * tests use the real `fetch` against the local stand-in.
 *
 * @example
 * ```ts
 * const client = createUpstreamClient(config, log);
 * const result = await client.stream(
 *   { model: config.model, messages: [{ role: "user", content: "Hi" }] },
 *   { onDelta: (t) => console.log(t), onRetry: () => {} },
 *   new AbortController().signal,
 * );
 * ```
 */
export function createUpstreamClient(
  config: Config,
  log: Logger,
  fetchImpl: typeof fetch = fetch,
): UpstreamClient {
  const url = `${config.baseUrl}/chat/completions`;
  const headers: Record<string, string> = {
    "content-type": "application/json",
    accept: "text/event-stream",
  };
  if (config.apiKey) headers.authorization = `Bearer ${config.apiKey}`;
  if (config.appUrl) headers["http-referer"] = config.appUrl;
  if (config.appTitle) {
    headers["x-title"] = config.appTitle;
    headers["x-openrouter-title"] = config.appTitle;
  }

  function body(req: ChatRequest): string {
    const payload: Record<string, unknown> = {
      model: req.model,
      messages: req.messages,
      stream: true,
      // Asks OpenAI-compatible servers other than OpenRouter for usage too.
      stream_options: { include_usage: true },
      temperature: config.temperature,
      max_tokens: config.maxTokens,
    };
    if (config.fallbackModels.length > 0 && req.model === config.model) {
      payload.models = [req.model, ...config.fallbackModels];
    }
    if (req.user) payload.user = req.user;
    return JSON.stringify(payload);
  }

  async function attempt(
    req: ChatRequest,
    hooks: StreamHooks,
    signal: AbortSignal,
    started: number,
    state: { firstTokenMs: number | null; content: string },
  ): Promise<Omit<ChatResult, "attempts" | "firstTokenMs">> {
    const res = await fetchImpl(url, { method: "POST", headers, body: body(req), signal });
    if (!res.ok || !res.body) {
      // The body may hold the provider's raw text; it is logged, never sent on.
      const detail = await res.text().catch(() => "");
      log.warn("upstream_http_error", { status: res.status, detail: detail.slice(0, 300) });
      throw fromStatus(res.status, parseRetryAfter(res.headers.get("retry-after")));
    }
    let model = req.model;
    let finishReason: string | null = null;
    let usage: Usage | null = null;
    let sawDone = false;
    for await (const msg of readSse(res.body, { maxEventBytes: config.maxSseEventBytes })) {
      // Checked per event as well: Deno does not always error a body that is
      // mid-read when its fetch is aborted, and a cancel must stop the stream.
      if (signal.aborted) throw signal.reason;
      if (msg.kind === "comment") continue;
      if (msg.data === "[DONE]") {
        sawDone = true;
        break;
      }
      let chunk: Record<string, unknown>;
      try {
        chunk = JSON.parse(msg.data);
      } catch {
        log.debug("upstream_malformed_chunk", { bytes: msg.data.length });
        continue;
      }
      if (typeof chunk !== "object" || chunk === null) continue;
      if (chunk.error && typeof chunk.error === "object") {
        throw fromStreamError(chunk.error as Record<string, unknown>);
      }
      if (typeof chunk.model === "string") model = chunk.model;
      if (chunk.usage && typeof chunk.usage === "object") usage = readUsage(chunk.usage);
      const choice = Array.isArray(chunk.choices) ? chunk.choices[0] : undefined;
      if (!choice || typeof choice !== "object") continue;
      const text = choice.delta?.content;
      if (typeof text === "string" && text.length > 0) {
        if (state.firstTokenMs === null) state.firstTokenMs = performance.now() - started;
        state.content += text;
        const paused = hooks.onDelta(text);
        if (paused) await paused;
      }
      if (typeof choice.finish_reason === "string") {
        if (choice.finish_reason === "error") {
          throw new UpstreamError("upstream_error", "The model provider failed mid-answer", true);
        }
        finishReason = choice.finish_reason;
      }
    }
    if (!sawDone && finishReason === null) {
      throw new UpstreamError(
        "upstream_unavailable",
        "The model provider closed the connection before the answer was complete",
        true,
      );
    }
    return { content: state.content, model, finishReason: finishReason ?? "stop", usage };
  }

  return {
    async stream(req, hooks, signal) {
      const started = performance.now();
      const state = { firstTokenMs: null as number | null, content: "" };
      const total = new AbortController();
      const totalTimer = setTimeout(
        () => total.abort(new Timeout("total")),
        config.totalTimeoutMs,
      );
      try {
        for (let n = 0;; n++) {
          const firstToken = new AbortController();
          const ftTimer = setTimeout(
            () => firstToken.abort(new Timeout("first_token")),
            config.firstTokenTimeoutMs,
          );
          const linked = linkSignals(signal, total.signal, firstToken.signal);
          const onDelta = hooks.onDelta;
          try {
            const result = await attempt(
              req,
              {
                ...hooks,
                onDelta: (t) => {
                  clearTimeout(ftTimer);
                  return onDelta(t);
                },
              },
              linked.signal,
              started,
              state,
            );
            return { ...result, firstTokenMs: state.firstTokenMs, attempts: n + 1 };
          } catch (err) {
            if (signal.aborted) throw signal.reason;
            const reason = total.signal.aborted
              ? total.signal.reason
              : firstToken.signal.aborted
              ? firstToken.signal.reason
              : err;
            const e = toUpstreamError(reason);
            const tooLong = e.retryAfterMs !== undefined && e.retryAfterMs > config.retryMaxMs;
            if (
              !e.retryable || state.firstTokenMs !== null || n >= config.retries ||
              total.signal.aborted || tooLong
            ) {
              throw e;
            }
            const delayMs = e.retryAfterMs ??
              fullJitterDelay(n, config.retryBaseMs, config.retryMaxMs);
            log.info("upstream_retry", { attempt: n + 1, delay_ms: delayMs, code: e.code });
            hooks.onRetry({ attempt: n + 1, delayMs, code: e.code });
            const wait = linkSignals(signal, total.signal);
            try {
              await sleep(delayMs, wait.signal);
            } finally {
              wait.dispose();
            }
          } finally {
            clearTimeout(ftTimer);
            linked.dispose();
          }
        }
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        throw toUpstreamError(total.signal.aborted ? total.signal.reason : err);
      } finally {
        clearTimeout(totalTimer);
      }
    },
  };
}

function readUsage(raw: object): Usage | null {
  const u = raw as Record<string, unknown>;
  const n = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  const usage: Usage = {
    prompt_tokens: n(u.prompt_tokens),
    completion_tokens: n(u.completion_tokens),
    total_tokens: n(u.total_tokens) || n(u.prompt_tokens) + n(u.completion_tokens),
  };
  if (typeof u.cost === "number") usage.cost = u.cost;
  return usage;
}
