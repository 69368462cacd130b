/**
 * Running the tool calls of one model turn: each gets a `tool_call` frame and
 * exactly one `tool_result` frame, whatever happens — a server tool that
 * throws, hangs or gets bad arguments, a client that never answers, a human
 * who denies it, a cancel. Calls of one turn run at once; their results go
 * back to the model in the model's order.
 *
 * @module
 */
import type { ModelEvent, ToolCallMessage } from "../model/model.ts";
import type { ChatMessage } from "../model/model.ts";
import type { QueryTools, ResolvedTool } from "../agent/tools.ts";
import type { TurnContext } from "../agent/definition.ts";
import { AgentError } from "../protocol/errors.ts";
import type { OutgoingFrame } from "../protocol/wire.ts";
import type { Logger } from "../platform/log.ts";
import { linkSignals } from "../platform/signals.ts";
import type { InFlight, ToolAnswer } from "./turns.ts";

/** Results bigger than this go back as an error: they would flood the model and the log. */
const MAX_RESULT_CHARS = 100_000;

/** What running tool calls needs. */
export interface ToolCallDeps {
  turn: InFlight;
  tools: QueryTools;
  ctx: TurnContext;
  iteration: number;
  emit(frame: OutgoingFrame): void;
  log: Logger;
  timeouts: { serverMs: number; clientMs: number; approvalMs: number };
  /** Results already in (a turn carried on from a checkpoint): not run again. */
  finished?: Record<string, string>;
  /**
   * Carrying a turn on after another process stopped: its `tool_call` frames
   * were sent already, and a server tool that was running there is not run
   * twice (its side effects may have happened).
   */
  resuming?: boolean;
  /** Each result, as the model will get it, when it is in. */
  onResult?(toolCallId: string, content: string): void;
}

type ToolCall = Omit<Extract<ModelEvent, { type: "tool_call" }>, "type">;

/** One call's outcome, as the `tool_result` frame says it. */
type Outcome = { ok: true; result: unknown } | { ok: false; error: string };

/**
 * A signal that aborts with `parent` (the turn), or after `ms` with a
 * "timed out" error; `dispose` clears the timer and the link.
 */
function deadline(parent: AbortSignal, ms: number, what: string) {
  const timeout = new AbortController();
  const timer = setTimeout(
    () => timeout.abort(new AgentError("upstream_timeout", `${what} timed out`)),
    ms,
  );
  const linked = linkSignals(parent, timeout.signal);
  return {
    signal: linked.signal,
    dispose() {
      clearTimeout(timer);
      linked.dispose();
    },
  };
}

/** `work`, or a rejection with the signal's reason as soon as it aborts (work that ignores it). */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  let onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([work, stop]).finally(() => signal.removeEventListener("abort", onAbort!));
}

function parseArguments(raw: string): Record<string, unknown> | null {
  if (raw.trim() === "") return {};
  try {
    const v = JSON.parse(raw);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/** A short, safe message for a tool that failed: our typed errors say why; others do not leak. */
function failure(err: unknown): string {
  return err instanceof AgentError ? err.message : "The tool failed";
}

async function waitAnswer(
  deps: ToolCallDeps,
  id: string,
  kind: ToolAnswer["kind"],
  ms: number,
  what: string,
): Promise<ToolAnswer> {
  const d = deadline(deps.turn.signal, ms, what);
  try {
    return await untilAborted(deps.turn.waitFor(id, kind), d.signal);
  } finally {
    d.dispose();
    deps.turn.forget(id);
  }
}

async function runOne(
  deps: ToolCallDeps,
  call: ToolCall,
  tool: ResolvedTool | undefined,
  args: Record<string, unknown> | null,
): Promise<Outcome> {
  if (!tool) return { ok: false, error: `Unknown tool: ${call.name.slice(0, 64)}` };
  if (args === null) return { ok: false, error: "The arguments were not a valid JSON object" };
  if (deps.resuming && tool.executor === "server" && !tool.needsApproval) {
    return { ok: false, error: "Interrupted: the server running this tool stopped" };
  }
  if (tool.needsApproval) {
    const a = await waitAnswer(
      deps,
      call.id,
      "approval",
      deps.timeouts.approvalMs,
      "Waiting for approval",
    );
    if (a.kind === "approval" && !a.approved) {
      return { ok: false, error: `Denied by the user${a.reason ? `: ${a.reason}` : ""}` };
    }
  }
  if (tool.executor === "client") {
    const a = await waitAnswer(
      deps,
      call.id,
      "tool_result",
      deps.timeouts.clientMs,
      "Waiting for the client's tool result",
    );
    if (a.kind !== "tool_result") return { ok: false, error: "No result" };
    return a.error !== undefined ? { ok: false, error: a.error } : { ok: true, result: a.result };
  }
  const parsed = tool.def.parameters.safeParse(args);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    return {
      ok: false,
      error: `Invalid arguments: ${first?.path.join(".") || "(root)"}: ${first?.message}`,
    };
  }
  const d = deadline(
    deps.turn.signal,
    tool.def.timeoutMs ?? deps.timeouts.serverMs,
    `The tool ${tool.name}`,
  );
  try {
    const work = Promise.resolve().then(() =>
      tool.def.execute(parsed.data, { ...deps.ctx, signal: d.signal, toolCallId: call.id })
    );
    const result = await untilAborted(work, d.signal);
    return { ok: true, result: result === undefined ? null : result };
  } catch (err) {
    if (deps.turn.signal.aborted) throw err;
    if (!(err instanceof AgentError)) {
      deps.log.warn("tool_failed", { tool: tool.name, err: String(err).slice(0, 300) });
    }
    return { ok: false, error: failure(err) };
  } finally {
    d.dispose();
  }
}

/**
 * Runs the calls of one model turn and returns the messages that carry them
 * into the conversation: the assistant's `tool_calls` and one `tool` message
 * per call, in the model's order.
 *
 * @example
 * ```ts ignore
 * const messages = await runToolCalls(deps, calls, "Let me check.");
 * ```
 */
export async function runToolCalls(
  deps: ToolCallDeps,
  calls: ToolCall[],
  text: string,
): Promise<ChatMessage[]> {
  const { turn, emit, iteration } = deps;
  const finished = deps.finished ?? {};
  const prepared = calls.map((call) => {
    const tool = deps.tools.get(call.name);
    const args = parseArguments(call.arguments);
    if (deps.resuming) return { call, tool, args };
    emit({
      type: "tool_call",
      id: turn.id,
      tool_call_id: call.id,
      tool: call.name.slice(0, 64),
      arguments: args ?? {},
      iteration,
      executor: tool?.executor ?? "server",
      needs_approval: tool?.needsApproval ?? false,
    });
    return { call, tool, args };
  });
  const outcomes = await Promise.all(prepared.map(async ({ call, tool, args }) => {
    if (finished[call.id] !== undefined) return finished[call.id];
    const started = performance.now();
    let outcome: Outcome;
    try {
      outcome = await runOne(deps, call, tool, args);
    } catch (err) {
      // Cancelled or the session ended: the call still gets its one result.
      outcome = {
        ok: false,
        error: turn.signal.aborted ? "Cancelled" : failure(err),
      };
    }
    let content = JSON.stringify(outcome.ok ? outcome.result : { error: outcome.error }) ?? "null";
    if (content.length > MAX_RESULT_CHARS) {
      outcome = { ok: false, error: `The result is larger than ${MAX_RESULT_CHARS} characters` };
      content = JSON.stringify({ error: outcome.error });
    }
    emit({
      type: "tool_result",
      id: turn.id,
      tool_call_id: call.id,
      tool: call.name.slice(0, 64),
      ...outcome,
      duration_ms: Math.round(performance.now() - started),
    });
    deps.onResult?.(call.id, content);
    return content;
  }));
  turn.signal.throwIfAborted();
  const toolCalls: ToolCallMessage[] = calls.map((c) => ({
    id: c.id,
    type: "function",
    function: { name: c.name, arguments: c.arguments },
  }));
  return [
    { role: "assistant", content: text === "" ? null : text, tool_calls: toolCalls },
    ...calls.map((c, i) => ({ role: "tool" as const, tool_call_id: c.id, content: outcomes[i] })),
  ];
}
