/**
 * The default model backend: OpenRouter, or any OpenAI-compatible server,
 * over one streamed chat completion. Retries before the first event (network,
 * 408, 429, 5xx; full-jitter backoff honouring `Retry-After`), first-token and
 * total timeouts, tool calls assembled from their fragments, reasoning kept
 * apart from the answer, and every failure turned into an `AgentError` whose
 * message is safe to show a user.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Usage } from "../protocol/wire.ts";
import type { ErrorCode } from "../protocol/codes.ts";
import { AgentError } from "../protocol/errors.ts";
import type { Logger } from "../platform/log.ts";
import { fullJitterDelay, parseRetryAfter, sleep } from "../platform/backoff.ts";
import { linkSignals } from "../platform/signals.ts";
import { readSse, SseEventTooLargeError } from "./sse.ts";
import type { ModelBackend, ModelEvent, ModelRequest } from "./model.ts";

/** What {@linkcode openRouter} lets a deployer override; the rest comes from the environment. */
export interface OpenRouterOptions {
  /** The default model (env `MODEL`). */
  model?: string;
  /** Fallback models OpenRouter tries in order (env `FALLBACK_MODELS`). */
  fallbackModels?: string[];
  /** Env `OPENROUTER_API_KEY`. */
  apiKey?: string;
  /** Env `OPENROUTER_BASE_URL`; any OpenAI-compatible server. */
  baseUrl?: string;
  temperature?: number;
  maxTokens?: number;
  /** Replaces `fetch` (the benchmark counts calls with it). */
  fetch?: typeof fetch;
}

/** What the backend needs from the running server. */
export interface ModelDeps {
  config: Config;
  log: Logger;
  /** How HTTP requests are made (UPSTREAM_TRANSPORT); default: `fetch`. */
  fetch?: typeof fetch;
}

/** A backend, or a recipe for one that is completed from the configuration at start. */
export type ModelSetup = ModelBackend | ((deps: ModelDeps) => ModelBackend);

function upstreamError(
  code: ErrorCode,
  message: string,
  retryable: boolean,
  retryAfterMs?: number,
): AgentError {
  return new AgentError(code, message, { retryable, retryAfterMs });
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
function fromStatus(status: number, retryAfterMs?: number): AgentError {
  switch (status) {
    case 400:
      return upstreamError("upstream_error", "The model provider rejected the request", false);
    case 401:
      return upstreamError(
        "upstream_error",
        "The server's OpenRouter API key was rejected; the operator must fix it",
        false,
      );
    case 402:
      return upstreamError(
        "insufficient_credits",
        "The OpenRouter account is out of credits",
        false,
      );
    case 403:
      return upstreamError("upstream_error", "The model provider refused this request", false);
    case 404:
      return upstreamError("upstream_error", "The model is not available", false);
    case 408:
    case 504:
      return upstreamError("upstream_timeout", "The model provider timed out", true);
    case 429:
      return upstreamError(
        "upstream_rate_limited",
        "The model provider is rate limiting requests",
        true,
        retryAfterMs,
      );
    case 502:
    case 503:
      return upstreamError("upstream_unavailable", "The model provider is unavailable", true);
    default:
      return upstreamError(
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
function fromStreamError(error: Record<string, unknown>): AgentError {
  const code = error.code;
  if (typeof code === "number") return fromStatus(code);
  const text = `${typeof code === "string" ? code : ""} ${
    String((error.metadata as Record<string, unknown> | undefined)?.error_type ?? "")
  }`.toLowerCase();
  if (text.includes("rate")) return fromStatus(429);
  if (text.includes("timeout")) return fromStatus(408);
  if (text.includes("credit") || text.includes("payment")) return fromStatus(402);
  if (text.includes("unavailable") || text.includes("overloaded")) return fromStatus(503);
  return upstreamError("upstream_error", "The model provider failed mid-answer", true);
}

function toAgentError(err: unknown): AgentError {
  if (err instanceof AgentError) return err;
  if (err instanceof SseEventTooLargeError) {
    return upstreamError("upstream_error", "The model provider sent an oversized event", false);
  }
  if (err instanceof Timeout) {
    return upstreamError(
      "upstream_timeout",
      err.which === "first_token"
        ? "The model did not start answering in time"
        : "The model did not finish answering in time",
      true,
    );
  }
  // fetch and body reads throw TypeError (or Deno's errors) on network failure.
  return upstreamError("upstream_unavailable", "Could not reach the model provider", true);
}

function readUsage(raw: object): Usage {
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

/** Tool-call fragments of one stream, assembled by their index. */
class ToolCallAssembler {
  readonly #calls: { id: string; name: string; arguments: string }[] = [];

  add(fragments: unknown): boolean {
    if (!Array.isArray(fragments)) return false;
    for (const f of fragments) {
      if (typeof f !== "object" || f === null) continue;
      const index = typeof f.index === "number" && f.index >= 0 && f.index < 128
        ? f.index
        : this.#calls.length;
      const call = this.#calls[index] ??= { id: "", name: "", arguments: "" };
      if (typeof f.id === "string" && f.id) call.id = f.id;
      const fn = f.function;
      if (typeof fn === "object" && fn !== null) {
        if (typeof fn.name === "string") call.name += fn.name;
        if (typeof fn.arguments === "string") call.arguments += fn.arguments;
      }
    }
    return true;
  }

  /** The complete calls, in the model's order; calls without an id get one. */
  take(): ModelEvent[] {
    const out: ModelEvent[] = [];
    for (const c of this.#calls) {
      if (!c) continue;
      out.push({
        type: "tool_call",
        id: c.id || `call_${crypto.randomUUID().slice(0, 8)}`,
        name: c.name,
        arguments: c.arguments,
      });
    }
    this.#calls.length = 0;
    return out;
  }
}

/** The reasoning text of a delta: `reasoning`, else the text of `reasoning_details`. */
function reasoningOf(delta: Record<string, unknown>): string {
  if (typeof delta.reasoning === "string") return delta.reasoning;
  const details = delta.reasoning_details;
  if (!Array.isArray(details)) return "";
  let text = "";
  for (const d of details) {
    if (d && typeof d === "object" && typeof d.text === "string") text += d.text;
  }
  return text;
}

/**
 * The OpenRouter backend. Options override the environment (`MODEL`,
 * `OPENROUTER_API_KEY`, …); with none it is exactly the environment's.
 *
 * @example
 * ```ts
 * import { openRouter } from "./openrouter.ts";
 * const model = openRouter({ model: "openai/gpt-4o-mini", temperature: 0.2 });
 * ```
 */
export function openRouter(opts: OpenRouterOptions = {}): (deps: ModelDeps) => ModelBackend {
  return ({ config, log, fetch }) => createOpenRouter(config, log, { fetch, ...opts });
}

/**
 * Builds the backend from a configuration.
 *
 * @example
 * ```ts
 * import { createOpenRouter } from "./openrouter.ts";
 * import { loadConfig } from "../platform/config.ts";
 * import { createLogger } from "../platform/log.ts";
 * export async function hello(apiKey: string) {
 *   const r = loadConfig({ OPENROUTER_API_KEY: apiKey });
 *   if (!r.ok) throw new Error(r.errors.join("; "));
 *   const model = createOpenRouter(r.config, createLogger("info"));
 *   for await (const e of model.stream(
 *     { model: model.defaultModel, messages: [{ role: "user", content: "Hi" }] },
 *     new AbortController().signal,
 *   )) if (e.type === "text") console.log(e.text);
 * }
 * ```
 */
export function createOpenRouter(
  config: Config,
  log: Logger,
  opts: OpenRouterOptions = {},
): ModelBackend {
  const apiKey = opts.apiKey ?? config.apiKey;
  const baseUrl = (opts.baseUrl ?? config.baseUrl).replace(/\/+$/, "");
  const defaultModel = opts.model ?? config.model;
  const fallbackModels = opts.fallbackModels ?? config.fallbackModels;
  const temperature = opts.temperature ?? config.temperature;
  const maxTokens = opts.maxTokens ?? config.maxTokens;
  const fetchImpl = opts.fetch ?? fetch;
  const url = `${baseUrl}/chat/completions`;
  const headers: Record<string, string> = {
    "content-type": "application/json",
    accept: "text/event-stream",
  };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  if (config.appUrl) headers["http-referer"] = config.appUrl;
  if (config.appTitle) {
    headers["x-title"] = config.appTitle;
    headers["x-openrouter-title"] = config.appTitle;
  }

  function body(req: ModelRequest): string {
    const payload: Record<string, unknown> = {
      ...req.extra,
      model: req.model,
      messages: req.messages,
      stream: true,
      // Asks OpenAI-compatible servers other than OpenRouter for usage too.
      stream_options: { include_usage: true },
      temperature: req.temperature ?? temperature,
      max_tokens: req.maxTokens ?? maxTokens,
    };
    if (req.tools && req.tools.length > 0) {
      payload.tools = req.tools.map((t) => ({
        type: "function",
        function: { name: t.name, description: t.description, parameters: t.parameters },
      }));
    }
    if (fallbackModels.length > 0 && req.model === defaultModel) {
      payload.models = [req.model, ...fallbackModels];
    }
    if (req.user) payload.user = req.user;
    return JSON.stringify(payload);
  }

  /** One HTTP attempt; `progress.started` turns true at the first content event. */
  async function* attempt(
    req: ModelRequest,
    signal: AbortSignal,
    progress: { started: boolean; onFirst: () => void },
  ): AsyncGenerator<ModelEvent> {
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
    const tools = new ToolCallAssembler();
    const begin = () => {
      if (progress.started) return;
      progress.started = true;
      progress.onFirst();
    };
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
      const delta = choice.delta;
      if (delta && typeof delta === "object") {
        const thought = reasoningOf(delta);
        if (thought.length > 0) {
          begin();
          yield { type: "reasoning", text: thought };
        }
        if (tools.add(delta.tool_calls)) begin();
        const text = delta.content;
        if (typeof text === "string" && text.length > 0) {
          begin();
          yield { type: "text", text };
        }
      }
      if (typeof choice.finish_reason === "string") {
        if (choice.finish_reason === "error") {
          throw upstreamError("upstream_error", "The model provider failed mid-answer", true);
        }
        finishReason = choice.finish_reason;
      }
    }
    if (!sawDone && finishReason === null) {
      throw upstreamError(
        "upstream_unavailable",
        "The model provider closed the connection before the answer was complete",
        true,
      );
    }
    yield* tools.take();
    if (usage) yield { type: "usage", usage };
    yield { type: "finish", reason: finishReason ?? "stop", model };
  }

  async function* stream(req: ModelRequest, signal: AbortSignal): AsyncGenerator<ModelEvent> {
    if (!apiKey) {
      throw new AgentError(
        "not_configured",
        "The server has no OPENROUTER_API_KEY configured, so it cannot answer",
      );
    }
    const total = new AbortController();
    const totalTimer = setTimeout(() => total.abort(new Timeout("total")), config.totalTimeoutMs);
    const progress = { started: false, onFirst: () => {} };
    try {
      for (let n = 0;; n++) {
        const firstToken = new AbortController();
        const ftTimer = setTimeout(
          () => firstToken.abort(new Timeout("first_token")),
          config.firstTokenTimeoutMs,
        );
        progress.onFirst = () => clearTimeout(ftTimer);
        const linked = linkSignals(signal, total.signal, firstToken.signal);
        try {
          yield* attempt(req, linked.signal, progress);
          return;
        } catch (err) {
          if (signal.aborted) throw signal.reason;
          const reason = total.signal.aborted
            ? total.signal.reason
            : firstToken.signal.aborted
            ? firstToken.signal.reason
            : err;
          const e = toAgentError(reason);
          const tooLong = e.retryAfterMs !== undefined && e.retryAfterMs > config.retryMaxMs;
          // Once anything was streamed a retry would repeat it: only fail then.
          if (
            !e.retryable || progress.started || n >= config.retries || total.signal.aborted ||
            tooLong
          ) {
            throw e;
          }
          const delayMs = e.retryAfterMs ??
            fullJitterDelay(n, config.retryBaseMs, config.retryMaxMs);
          log.info("upstream_retry", { attempt: n + 1, delay_ms: delayMs, code: e.code });
          yield { type: "retry", attempt: n + 1, delayMs, code: e.code };
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
      throw toAgentError(total.signal.aborted ? total.signal.reason : err);
    } finally {
      clearTimeout(totalTimer);
    }
  }

  return { name: "openrouter", defaultModel, configured: apiKey !== undefined, stream };
}
