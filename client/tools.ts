/**
 * Client tools and approvals (protocol v1.1): tools the app registers once, declared with every
 * query and run when the model calls them, and the human decisions on tools that need approval.
 * {@linkcode ToolRunner} runs each call at most once per `tool_call_id`, aborts it when the
 * server gave up on it or the query ended, and hands its answer frame to the client to deliver.
 *
 * @example
 * ```ts
 * import { AgentClient } from "./agent_client.ts";
 * const client = new AgentClient("ws://127.0.0.1:8000", {
 *   tools: {
 *     get_weather: {
 *       description: "Current weather in a city",
 *       parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
 *       execute: ({ city }) => ({ city, celsius: 21 }),
 *     },
 *   },
 *   onApproval: (call) => call.tool !== "delete_everything",
 * });
 * ```
 * @module
 */
import type { ClientFrame, ClientToolDeclaration, ToolCallFrame } from "./protocol.ts";

/**
 * What a client tool's `execute` is told besides its arguments.
 *
 * @example
 * ```ts
 * import type { ToolContext } from "./tools.ts";
 * const execute = async (args: { url: string }, { signal }: ToolContext) =>
 *   (await fetch(args.url, { signal })).status;
 * ```
 */
export interface ToolContext {
  /** Aborted when the query ends (cancel, error), the server gave up waiting, or the client closed. */
  signal: AbortSignal;
  toolCallId: string;
  /** The query that called the tool. */
  queryId: string;
}

/**
 * A tool the client runs. Its return value (any JSON; `undefined` becomes `null`) goes back to
 * the model; a throw goes back as the tool's `error` (its message), and the model may recover.
 *
 * @example
 * ```ts
 * import type { ClientTool } from "./tools.ts";
 * const add: ClientTool<{ a: number; b: number }> = {
 *   description: "Adds two numbers",
 *   parameters: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } } },
 *   execute: ({ a, b }) => a + b,
 * };
 * ```
 */
// deno-lint-ignore no-explicit-any
export interface ClientTool<Args = any> {
  /** Tells the model when to use it. */
  description?: string;
  /** The arguments, as a JSON Schema object. */
  parameters?: Record<string, unknown>;
  /** Ask a human (the `onApproval` option or the `approval` event) before running it. */
  needs_approval?: boolean;
  execute(args: Args, ctx: ToolContext): unknown;
}

/**
 * Client tools by name.
 *
 * @example
 * ```ts
 * import type { ClientTools } from "./tools.ts";
 * const tools: ClientTools = { now: { execute: () => new Date().toISOString() } };
 * ```
 */
export type ClientTools = Record<string, ClientTool>;

/**
 * A tool call waiting for a human's decision: a server tool or a client tool that needs
 * approval, called by one of this client's queries.
 *
 * @example
 * ```ts
 * import { AgentClient } from "./agent_client.ts";
 * import type { ApprovalRequest } from "./tools.ts";
 * const client = new AgentClient("ws://127.0.0.1:8000");
 * client.on("approval", (req: ApprovalRequest) => req.approve(req.tool === "get_weather"));
 * ```
 */
export interface ApprovalRequest {
  queryId: string;
  toolCallId: string;
  tool: string;
  arguments: Record<string, unknown>;
  executor: "server" | "client";
  frame: ToolCallFrame;
  /** Decides; the same as `client.approve(queryId, toolCallId, approved, reason)`. */
  approve(approved: boolean, reason?: string): void;
}

/**
 * What an approval handler returns: yes/no, or yes/no with a reason the model is told.
 *
 * @example
 * ```ts
 * import type { ApprovalDecision } from "./tools.ts";
 * const deny: ApprovalDecision = { approved: false, reason: "Not on weekends" };
 * ```
 */
export type ApprovalDecision = boolean | { approved: boolean; reason?: string };

/**
 * Decides on tool calls that need approval, e.g. by asking the user.
 *
 * @example
 * ```ts
 * import type { ApprovalHandler } from "./tools.ts";
 * const onApproval: ApprovalHandler = (call) => call.tool !== "delete_everything";
 * ```
 */
export type ApprovalHandler = (
  call: ApprovalRequest,
) => ApprovalDecision | Promise<ApprovalDecision>;

/**
 * A frame that answers a tool call: a client tool's result, or a human's decision.
 *
 * @example
 * ```ts
 * import type { ToolAnswerFrame } from "./tools.ts";
 * const f: ToolAnswerFrame = { type: "tool_result", id: "q1", tool_call_id: "call_1", result: 42 };
 * ```
 */
export type ToolAnswerFrame = Extract<ClientFrame, { type: "tool_result" | "approval" }>;

/**
 * How the runner reaches the client.
 *
 * @example
 * ```ts
 * import type { ToolIO } from "./tools.ts";
 * const io: ToolIO = { answer: (f) => console.log(f.tool_call_id), requestApproval: console.log };
 * ```
 */
export interface ToolIO {
  /** Delivers an answer frame (queued while offline, resent after a resume if unanswered). */
  answer(frame: ToolAnswerFrame): void;
  /** Asks the app for a decision when there is no `onApproval` handler. */
  requestApproval(request: ApprovalRequest): void;
}

/** Ids of calls already taken on, remembered past their query so a late replay cannot rerun them. */
const REMEMBERED_CALLS = 1000;

/**
 * The declarations of `tools` sent with a query (`query.tools`); `names` picks some of them.
 *
 * @example
 * ```ts
 * import { declareTools } from "./tools.ts";
 * declareTools({ now: { description: "Time", execute: () => Date.now() } });
 * // [{ name: "now", description: "Time" }]
 * ```
 */
export function declareTools(tools: ClientTools, names?: string[]): ClientToolDeclaration[] {
  const out: ClientToolDeclaration[] = [];
  for (const [name, t] of Object.entries(tools)) {
    if (names && !names.includes(name)) continue;
    const d: ClientToolDeclaration = { name };
    if (t.description !== undefined) d.description = t.description;
    if (t.parameters !== undefined) d.parameters = t.parameters;
    if (t.needs_approval) d.needs_approval = true;
    out.push(d);
  }
  return out;
}

/** Adds to a set that forgets its oldest entries past {@linkcode REMEMBERED_CALLS}. */
function remember(set: Set<string>, id: string) {
  set.add(id);
  if (set.size > REMEMBERED_CALLS) set.delete(set.values().next().value!);
}

function errorMessage(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text || "The tool failed";
}

/**
 * Runs client tools and collects approvals for one client. Every `tool_call_id` is taken on once:
 * a replayed or repeated `tool_call` frame never runs a tool twice or answers twice.
 *
 * @example
 * ```ts
 * import { ToolRunner } from "./tools.ts";
 * const tools = { now: { execute: () => Date.now() } };
 * const runner = new ToolRunner(tools, undefined, {
 *   answer: (f) => console.log("send", f),
 *   requestApproval: (r) => r.approve(true),
 * });
 * ```
 */
export class ToolRunner {
  readonly #tools: ClientTools;
  readonly #onApproval?: ApprovalHandler;
  readonly #io: ToolIO;
  readonly #seen = new Set<string>();
  readonly #running = new Map<string, { queryId: string; abort: AbortController }>();
  readonly #approvals = new Map<string, ApprovalRequest>();
  readonly #decided = new Set<string>();

  /**
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * new ToolRunner({}, () => true, { answer: console.log, requestApproval: console.log });
   * ```
   */
  constructor(tools: ClientTools, onApproval: ApprovalHandler | undefined, io: ToolIO) {
    this.#tools = tools;
    this.#onApproval = onApproval;
    this.#io = io;
  }

  /**
   * Tool calls waiting for a decision, oldest first.
   *
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * const runner = new ToolRunner({}, undefined, { answer: console.log, requestApproval: console.log });
   * for (const r of runner.pendingApprovals) console.log(r.tool);
   * ```
   */
  get pendingApprovals(): ApprovalRequest[] {
    return [...this.#approvals.values()];
  }

  /**
   * A `tool_call` of one of this client's queries arrived.
   *
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * const runner = new ToolRunner({}, undefined, { answer: console.log, requestApproval: console.log });
   * runner.onToolCall({
   *   type: "tool_call", seq: 5, timestamp: "", id: "q1", tool_call_id: "call_1", tool: "now",
   *   arguments: {}, iteration: 1, executor: "server", needs_approval: false,
   * });
   * ```
   */
  onToolCall(f: ToolCallFrame): void {
    if (this.#seen.has(f.tool_call_id)) return;
    remember(this.#seen, f.tool_call_id);
    if (f.needs_approval) return this.#askApproval(f);
    if (f.executor === "client") this.#run(f);
  }

  /**
   * The server's account of a call arrived: it is over (done, failed, denied or timed out), so
   * a run still going is aborted and a pending question withdrawn.
   *
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * const runner = new ToolRunner({}, undefined, { answer: console.log, requestApproval: console.log });
   * runner.settled("call_1");
   * ```
   */
  settled(toolCallId: string): void {
    remember(this.#seen, toolCallId);
    remember(this.#decided, toolCallId);
    this.#approvals.delete(toolCallId);
    const run = this.#running.get(toolCallId);
    if (run) {
      this.#running.delete(toolCallId);
      run.abort.abort(new Error("The server no longer waits for this tool call"));
    }
  }

  /**
   * A human decided. For a client tool that was approved, the tool runs next.
   *
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * const runner = new ToolRunner({}, undefined, { answer: console.log, requestApproval: console.log });
   * runner.approve("q1", "call_1", false, "Not now");
   * ```
   */
  approve(queryId: string, toolCallId: string, approved: boolean, reason?: string): void {
    // A second decision on the same call (a double click) would only be refused by the server.
    if (this.#decided.has(toolCallId)) return;
    remember(this.#decided, toolCallId);
    const request = this.#approvals.get(toolCallId);
    this.#approvals.delete(toolCallId);
    const frame: ToolAnswerFrame = {
      type: "approval",
      id: queryId,
      tool_call_id: toolCallId,
      approved,
    };
    if (reason !== undefined) frame.reason = reason;
    this.#io.answer(frame);
    if (approved && request?.executor === "client") this.#run(request.frame);
  }

  /**
   * The query ended: its runs are aborted and its questions withdrawn.
   *
   * @example
   * ```ts
   * import { ToolRunner } from "./tools.ts";
   * const runner = new ToolRunner({}, undefined, { answer: console.log, requestApproval: console.log });
   * runner.endQuery("q1");
   * ```
   */
  endQuery(queryId: string): void {
    for (const [id, r] of this.#approvals) if (r.queryId === queryId) this.#approvals.delete(id);
    for (const [id, run] of this.#running) {
      if (run.queryId !== queryId) continue;
      this.#running.delete(id);
      run.abort.abort(new Error("The query ended"));
    }
  }

  #askApproval(f: ToolCallFrame) {
    const request: ApprovalRequest = {
      queryId: f.id,
      toolCallId: f.tool_call_id,
      tool: f.tool,
      arguments: f.arguments ?? {},
      executor: f.executor,
      frame: f,
      approve: (approved, reason) => this.approve(f.id, f.tool_call_id, approved, reason),
    };
    this.#approvals.set(f.tool_call_id, request);
    const handler = this.#onApproval;
    if (!handler) return this.#io.requestApproval(request);
    Promise.resolve()
      .then(() => handler(request))
      .then(
        (d) => typeof d === "boolean" ? { approved: d } : d,
        (e) => ({ approved: false, reason: `Approval failed: ${errorMessage(e)}` }),
      )
      .then((d) => {
        // Withdrawn meanwhile: the server decided (timeout) or the query ended.
        if (this.#approvals.get(f.tool_call_id) !== request) return;
        try {
          this.approve(f.id, f.tool_call_id, d?.approved === true, d?.reason);
        } catch { /* the client stopped */ }
      });
  }

  async #run(f: ToolCallFrame) {
    const abort = new AbortController();
    this.#running.set(f.tool_call_id, { queryId: f.id, abort });
    const answer: ToolAnswerFrame = { type: "tool_result", id: f.id, tool_call_id: f.tool_call_id };
    try {
      const tool = Object.hasOwn(this.#tools, f.tool) ? this.#tools[f.tool] : undefined;
      if (!tool) throw new Error(`Unknown client tool "${f.tool}"`);
      const result = await tool.execute(f.arguments ?? {}, {
        signal: abort.signal,
        toolCallId: f.tool_call_id,
        queryId: f.id,
      });
      answer.result = result === undefined ? null : result;
      JSON.stringify(answer); // a result that cannot travel is the tool's error, not a crash
    } catch (e) {
      delete answer.result;
      answer.error = errorMessage(e);
    }
    if (abort.signal.aborted) return; // nobody waits for it any more
    this.#running.delete(f.tool_call_id);
    try {
      this.#io.answer(answer);
    } catch { /* the client stopped */ }
  }
}
