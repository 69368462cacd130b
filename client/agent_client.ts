/**
 * TypeScript client for the `agent_websocket` edge function, protocol v1 with the v1.1
 * additions (tools, approvals, reasoning, conversations, memory). No dependencies: runs in
 * browsers, Deno and Node 20+ (pass the `ws` package's `WebSocket` where there is no global
 * one). The connection itself (reconnect, heartbeat, offline queue, tokens) is
 * {@linkcode ReconnectingTransport}; this module speaks the protocol over it: sessions resumed
 * without losing or repeating frames, queries as a promise plus streams of text, reasoning and
 * tool events, client tools answered automatically, conversations shared by several sockets,
 * and commands.
 *
 * @example
 * ```ts
 * import { AgentClient } from "./agent_client.ts";
 * const client = new AgentClient("ws://127.0.0.1:8000");
 * async function demo() {
 *   await client.connect();
 *   const answer = client.ask("Hello!");
 *   for await (const delta of answer.deltas) console.log(delta);
 *   console.log((await answer.response).usage);
 *   client.close();
 * }
 * ```
 * @module
 */
import { isDuplicate, resumeUrl } from "./backoff.ts";
import {
  checkConversation,
  type ConversationsFrame,
  conversationUrl,
  type MemoryClearedFrame,
  type PresenceFrame,
  type SearchMemoryFrame,
  type SearchMemoryOptions,
} from "./conversation.ts";
import { Emitter, type Listener } from "./emitter.ts";
import { AgentError } from "./errors.ts";
import {
  type ClientFrame,
  CLOSE,
  type ErrorFrame,
  type FinalResponse,
  type FrameBase,
  type NotificationFrame,
  type PongFrame,
  PROTOCOL,
  type QueryFrame,
  type ReasoningFrame,
  type ResponseFrame,
  type ServerFrame,
  type StatusFrame,
  type ToolCallFrame,
  type ToolResultFrame,
} from "./protocol.ts";
import { BufferedStream } from "./stream.ts";
import {
  type ApprovalHandler,
  type ApprovalRequest,
  type ClientTools,
  declareTools,
  type ToolAnswerFrame,
  ToolRunner,
} from "./tools.ts";
import { type ClientState, ReconnectingTransport, type TransportOptions } from "./transport.ts";

export { AgentError } from "./errors.ts";
export type { ReconnectOptions } from "./backoff.ts";
export type {
  ConversationsFrame,
  MemoryClearedFrame,
  PresenceFrame,
  SearchMemoryFrame,
  SearchMemoryOptions,
} from "./conversation.ts";
export type {
  ClientState,
  HeartbeatOptions,
  TokenProvider,
  WebSocketConstructor,
} from "./transport.ts";
export type {
  ApprovalDecision,
  ApprovalHandler,
  ApprovalRequest,
  ClientTool,
  ClientTools,
  ToolContext,
} from "./tools.ts";
export * from "./protocol.ts";

// How long to wait for the replay announced by `resumed` before sending queued frames anyway,
// so a server that miscounts `replayed` delays the queue instead of wedging it.
const REPLAY_GRACE_MS = 2000;
// Resends of one unanswered frame across resumes before it fails: a frame that makes the
// server drop the connection must not be replayed into it forever.
const MAX_RESENDS = 2;
// Socket ids of this client remembered, so that frames a replay addresses to one of its earlier
// sockets (a pong, an error about its frame) are still taken as its own.
const OWN_SOCKETS = 16;
// Ids of this client's queries remembered after they ended, for `isOwnQuery`.
const OWN_QUERIES = 256;

// ---------------------------------------------------------------------------------------------
// Options and events

/**
 * Options of {@link AgentClient}: the connection's (see {@linkcode TransportOptions}) plus
 * client tools and approvals.
 *
 * @example
 * ```ts
 * import type { AgentClientOptions } from "./agent_client.ts";
 * const opts: AgentClientOptions = { token: () => localStorage.token, maxOfflineQueue: 20 };
 * ```
 */
export interface AgentClientOptions extends TransportOptions {
  /** Extra subprotocols; `agent-websocket.v1` is always offered first. */
  protocols?: string[];
  /**
   * Client tools, declared with every query (`query.tools`) and run when the model calls them;
   * the answer goes back as a `tool_result` frame.
   */
  tools?: ClientTools;
  /**
   * Decides on tool calls of this client's queries that need approval. Without it, the
   * `approval` event fires and the app answers with {@linkcode AgentClient.approve}.
   */
  onApproval?: ApprovalHandler;
  /**
   * Joins the user's conversation of this name (`?conversation=<name>`, 1–128 of
   * `[A-Za-z0-9_.:-]`; v1.1): every socket of it sees every frame, any may ask. The client
   * resumes it after a drop with its own `last_seq`; a `session_id` in the URL is ignored.
   * Without it, a `conversation` parameter already in the URL is used.
   */
  conversation?: string;
}

/**
 * Event names and payloads of {@link AgentClient.on}. `error` carries every error: server
 * `error` frames (wrapped, the frame is in `.frame`) and client-side ones such as a terminal
 * close.
 *
 * @example
 * ```ts
 * import { AgentClient, type AgentClientEvents } from "./agent_client.ts";
 * const client = new AgentClient("ws://127.0.0.1:8000");
 * const onClose = (e: AgentClientEvents["close"]) => console.log(e.code, e.willReconnect);
 * client.on("close", onClose);
 * ```
 */
export interface AgentClientEvents {
  frame: ServerFrame;
  notification: NotificationFrame;
  status: StatusFrame;
  response: ResponseFrame;
  /** The model's reasoning, streamed apart from the answer (v1.1). */
  reasoning: ReasoningFrame;
  /** The model called a tool, server or client (v1.1). */
  tool_call: ToolCallFrame;
  /** A tool finished, failed, was denied or timed out (v1.1). */
  tool_result: ToolResultFrame;
  /** A tool call of this client's queries waits for a decision and there is no `onApproval`. */
  approval: ApprovalRequest;
  error: AgentError;
  pong: PongFrame;
  /**
   * A session is usable: after `connected`, or after `resumed` (`replayed` frames follow). In a
   * conversation, `socketId` is this socket's id (new for every socket).
   */
  open: {
    sessionId: string;
    resumed: boolean;
    replayed: number;
    socketId?: string;
    conversation?: string;
  };
  /** A socket joined or left the conversation; `sockets` is how many are attached now (v1.1). */
  presence: PresenceFrame;
  close: { code: number; reason: string; willReconnect: boolean };
  reconnecting: { attempt: number; delayMs: number };
  /** The session id changed; `lost` when a resume was refused and a fresh session began. */
  session: { sessionId: string; previousSessionId?: string; lost: boolean };
}

/**
 * Options of {@link AgentClient.ask}.
 *
 * @example
 * ```ts
 * import type { AskOptions } from "./agent_client.ts";
 * const opts: AskOptions = { model: "gpt-4o-mini", stream: false, metadata: { page: 3 } };
 * ```
 */
export interface AskOptions {
  /** Defaults to a random UUID. */
  id?: string;
  model?: string;
  /** Default true; with false only the final frame comes (and `deltas` yields it whole). */
  stream?: boolean;
  metadata?: Record<string, unknown>;
  /** Which client tools to declare: `false` for none, or names. Default: all of them. */
  tools?: false | string[];
}

/**
 * Everything that happens to one query, in order: `status`, `reasoning`, `response` (deltas and
 * the final frame), `tool_call`, `tool_result`.
 *
 * @example
 * ```ts
 * import type { AskEvent } from "./agent_client.ts";
 * const show = (e: AskEvent) => e.type === "tool_call" ? `${e.tool}(${JSON.stringify(e.arguments)})` : e.type;
 * ```
 */
export type AskEvent =
  | StatusFrame
  | ReasoningFrame
  | ResponseFrame
  | ToolCallFrame
  | ToolResultFrame;

/**
 * A query in progress.
 *
 * @example
 * ```ts
 * import { AgentClient } from "./agent_client.ts";
 * const client = new AgentClient("ws://127.0.0.1:8000");
 * async function demo() {
 *   const h = client.ask("Tell me a story");
 *   setTimeout(() => h.cancel(), 5000);
 *   for await (const d of h.deltas) console.log(d);
 * }
 * ```
 */
export interface AskHandle {
  readonly id: string;
  /** Text deltas as they arrive; ends with the query, throws its `AgentError` on failure. */
  readonly deltas: AsyncIterable<string>;
  /** Reasoning deltas as they arrive (v1.1); ends and throws like `deltas`. */
  readonly reasoning: AsyncIterable<string>;
  /** Every frame of the query (v1.1 tool events included); ends and throws like `deltas`. */
  readonly events: AsyncIterable<AskEvent>;
  /** The final frame; rejects with `AgentError`. Survives reconnects. */
  readonly response: Promise<FinalResponse>;
  /** Asks the server to stop; the query then ends with `finish_reason: "cancelled"`. */
  cancel(): Promise<void>;
  /** Decides on one of this query's tool calls that needs approval. */
  approve(toolCallId: string, approved: boolean, reason?: string): void;
}

// ---------------------------------------------------------------------------------------------
// Internals

type AnyFrame = FrameBase & { type: string; [field: string]: unknown };

/** Anything awaiting an answer frame. Kept after a drop so a resume can finish or resend it. */
interface Pending {
  frame: ClientFrame;
  /** Written to a socket of the current session (the server may have it). */
  sent: boolean;
  /** Some frame about it arrived (the server surely has it). */
  acked: boolean;
  resends: number;
  fail(err: AgentError): void;
}

interface Ask extends Pending {
  frame: QueryFrame & { id: string };
  deltas: BufferedStream<string>;
  reasoning: BufferedStream<string>;
  events: BufferedStream<AskEvent>;
  streamed: boolean;
  resolve(r: FinalResponse): void;
}

interface Call extends Pending {
  id: string;
  matches(f: AnyFrame): boolean;
  resolve(f: AnyFrame): void;
}

/** A tool result or approval on its way; the server's `tool_result` for the call answers it. */
interface Answer extends Pending {
  frame: ToolAnswerFrame;
}

function uuid(): string {
  const c = globalThis.crypto;
  // randomUUID is missing in insecure browser contexts (plain http pages).
  if (typeof c?.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (typeof c?.getRandomValues === "function") c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Adds `id`, forgetting the oldest past `max` (insertion order is age). */
function remember(set: Set<string>, id: string, max: number) {
  set.delete(id);
  set.add(id);
  if (set.size > max) set.delete(set.values().next().value!);
}

/** The `conversation` parameter of a URL the app built itself, if any. */
function conversationInUrl(url: string): string | undefined {
  try {
    return new URL(url, "ws://relative.invalid").searchParams.get("conversation") ?? undefined;
  } catch {
    return undefined; // the transport reports a bad URL when it opens it
  }
}

const noop = () => {};
const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

// ---------------------------------------------------------------------------------------------
// Client

/**
 * A connection to the agent that outlives sockets: it reconnects with backoff, resumes the
 * session (replayed frames are delivered once, in order) and keeps queries alive across drops.
 *
 * @example
 * ```ts
 * import { AgentClient } from "./agent_client.ts";
 * const client = new AgentClient("wss://<ref>.supabase.co/functions/v1/agent_websocket", {
 *   token: async () => (await fetch("/token")).text(), // e.g. the Supabase session's access_token
 * });
 * client.on("status", (s) => console.log(s.state));
 * async function demo() {
 *   await client.connect();
 *   const { content } = await client.ask("What is a WebSocket?").response;
 * }
 * ```
 */
export class AgentClient {
  readonly #url: string;
  readonly #transport: ReconnectingTransport;
  readonly #events = new Emitter<AgentClientEvents>();
  readonly #tools: ClientTools;
  readonly #runner: ToolRunner;

  #sessionId?: string;
  #lastSeq = 0;
  #handshaken = false;
  #sessionEnded = false;
  #replayLeft = 0;
  #replayTimer?: ReturnType<typeof setTimeout>;
  #limits: Record<string, unknown> = {};
  #features: string[] = [];
  #conversation?: string;
  /** Whether this client has been in its conversation, so the next socket resumes it. */
  #joined = false;
  #socketId?: string;
  #ownSockets = new Set<string>();
  #sockets?: number;
  #ownQueries = new Set<string>();

  #asks = new Map<string, Ask>();
  #calls = new Set<Call>();
  /** Keyed by `<type>:<tool_call_id>`. */
  #answers = new Map<string, Answer>();

  /**
   * Creates a client; nothing happens on the network until {@link connect}.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * // Node 20: pass `{ WebSocket }` from the "ws" package.
   * const client = new AgentClient("ws://127.0.0.1:8000", { reconnect: { maxAttempts: 5 } });
   * ```
   */
  constructor(url: string, options: AgentClientOptions = {}) {
    this.#url = url;
    const named = options.conversation ?? conversationInUrl(url);
    if (named !== undefined) this.#conversation = checkConversation(named);
    this.#tools = options.tools ?? {};
    this.#runner = new ToolRunner(this.#tools, options.onApproval, {
      answer: (frame) => this.#answer(frame),
      requestApproval: (request) => this.#events.emit("approval", request),
    });
    const protocols = [PROTOCOL, ...(options.protocols ?? []).filter((p) => p !== PROTOCOL)];
    this.#transport = new ReconnectingTransport(url, { ...options, protocols }, {
      handshake: true,
      url: () => this.#socketUrl(),
      probe: () => JSON.stringify({ type: "ping", id: `heartbeat-${uuid()}` }),
      classifyClose: (code, _reason, disposition) => {
        if (code === CLOSE.tooLarge) {
          // Resending the frame that was too big would only loop: fail it instead.
          this.#failSent(
            new AgentError("message_too_large", "Frame too large for the server"),
            true,
          );
        }
        // The notification is the reliable signal; the close reason text is only a convention.
        return this.#sessionEnded ? { reconnect: false, error: "session_timeout" } : disposition;
      },
    });
    const t = this.#transport;
    t.on("socket", () => this.#resetSocket());
    t.on("message", (data) => this.#onMessage(data));
    t.on("close", (e) => (this.#resetSocket(), this.#events.emit("close", e)));
    t.on("reconnecting", (e) => this.#events.emit("reconnecting", e));
    t.on("error", (e) => this.#events.emit("error", e));
    t.on("stop", (e) => this.#onStop(e));
  }

  /** @example `if (client.state === "reconnecting") showBanner();` */
  get state(): ClientState {
    return this.#transport.state;
  }

  /** @example `localStorage.sessionId = client.sessionId;` */
  get sessionId(): string | undefined {
    return this.#sessionId;
  }

  /**
   * The conversation this client is in (the `conversation` option), if any.
   *
   * @example `document.title = client.conversation ?? "chat";`
   */
  get conversation(): string | undefined {
    return this.#conversation;
  }

  /**
   * The id the server gave this socket in a conversation (new for every socket, so it changes
   * on reconnect); frames whose `socket` names another id are for another socket.
   *
   * @example `console.log(client.socketId);`
   */
  get socketId(): string | undefined {
    return this.#socketId;
  }

  /**
   * How many sockets are in the conversation, this one included, as the last `presence`
   * notification said; undefined before one arrived.
   *
   * @example `badge.textContent = String(client.sockets ?? 1);`
   */
  get sockets(): number | undefined {
    return this.#sockets;
  }

  /** Highest `seq` delivered so far. @example `console.log(client.lastSeq);` */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /**
   * Features the server announced in `connected` (v1.1), e.g. `tools`, `client_tools`.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * client.on("open", () => {
   *   if (!client.features.includes("client_tools")) console.warn("tools will not be called");
   * });
   * ```
   */
  get features(): readonly string[] {
    return this.#features;
  }

  /**
   * Tool calls of this client's queries waiting for {@linkcode approve}, oldest first.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * for (const r of client.pendingApprovals) r.approve(true);
   * ```
   */
  get pendingApprovals(): ApprovalRequest[] {
    return this.#runner.pendingApprovals;
  }

  /**
   * Subscribes to an event; returns the unsubscribe function.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * const off = client.on("reconnecting", ({ attempt, delayMs }) => console.log(attempt, delayMs));
   * off();
   * ```
   */
  on<K extends keyof AgentClientEvents>(
    type: K,
    listener: Listener<AgentClientEvents[K]>,
  ): () => void {
    return this.#events.on(type, listener);
  }

  /**
   * Removes a listener added with {@link on}.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * const onStatus = () => {};
   * client.on("status", onStatus);
   * client.off("status", onStatus);
   * ```
   */
  off<K extends keyof AgentClientEvents>(type: K, listener: Listener<AgentClientEvents[K]>): void {
    this.#events.off(type, listener);
  }

  /**
   * Opens the connection. Resolves on the first `connected` or `resumed`; failed attempts are
   * retried per the reconnect policy, and it rejects only when the client stops (terminal
   * close code, attempts exhausted, or {@link close}). Calling it again is harmless, and after
   * `close()` it starts over (resuming the session when the server still has it).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   await client.connect();
   * }
   * ```
   */
  connect(): Promise<void> {
    return this.#transport.connect();
  }

  /**
   * Sends a query. While disconnected (or before {@link connect}) it waits in the offline
   * queue, bounded by `maxOfflineQueue`; a full queue rejects `response` with
   * `offline_queue_full`. Registered client tools are declared with it.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const h = client.ask("Write a haiku", { model: "gpt-4o-mini" });
   *   for await (const d of h.deltas) Deno.stdout.writeSync(new TextEncoder().encode(d));
   *   const { usage, timing } = await h.response;
   * }
   * ```
   */
  ask(content: string, options: AskOptions = {}): AskHandle {
    const id = options.id ?? uuid();
    const frame: QueryFrame & { id: string } = { type: "query", id, content };
    if (options.model !== undefined) frame.model = options.model;
    if (options.stream !== undefined) frame.stream = options.stream;
    if (options.metadata !== undefined) frame.metadata = options.metadata;
    if (options.tools !== false) {
      const tools = declareTools(this.#tools, options.tools);
      if (tools.length) frame.tools = tools;
    }

    const deltas = new BufferedStream<string>();
    const reasoning = new BufferedStream<string>();
    const events = new BufferedStream<AskEvent>();
    const end = (e?: AgentError) => {
      for (const s of [deltas, reasoning, events]) s.end(e);
      this.#runner.endQuery(id);
      for (const [key, a] of this.#answers) if (a.frame.id === id) this.#answers.delete(key);
    };
    let resolve: (r: FinalResponse) => void = noop, reject: (e: AgentError) => void = noop;
    const response = new Promise<FinalResponse>((res, rej) => [resolve, reject] = [res, rej]);
    response.catch(noop); // users reading only `deltas` get the error there instead
    const ask: Ask = {
      frame,
      sent: false,
      acked: false,
      resends: 0,
      deltas,
      reasoning,
      events,
      streamed: false,
      resolve: (r) => (end(), resolve(r)),
      fail: (e) => (end(e), reject(e)),
    };
    const handle: AskHandle = {
      id,
      deltas,
      reasoning,
      events,
      response,
      // The answer already tells how the query ended, so a cancel that lost the race with the
      // end of the query is not an error worth an unhandled rejection.
      cancel: () => this.#asks.has(id) ? this.cancel(id).then(noop, noop) : Promise.resolve(),
      approve: (toolCallId, approved, reason) => this.approve(id, toolCallId, approved, reason),
    };
    try {
      if (this.#asks.has(id)) throw new AgentError("duplicate_id", `Query ${id} is in progress`);
      this.#checkLimits(frame);
      this.#asks.set(id, ask);
      remember(this.#ownQueries, id, OWN_QUERIES);
      this.#transport.send(JSON.stringify(frame), () => ask.sent = true);
    } catch (e) {
      if (this.#asks.get(id) === ask) this.#asks.delete(id);
      ask.fail(e instanceof AgentError ? e : new AgentError("internal_error", String(e)));
    }
    return handle;
  }

  /**
   * Decides on a tool call that needs approval (an `approval` frame). For a client tool that
   * is approved, the tool then runs and its result is sent. Throws `AgentError` `closed` after
   * the client stopped.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * client.on("approval", (r) => client.approve(r.queryId, r.toolCallId, r.tool === "get_weather"));
   * ```
   */
  approve(queryId: string, toolCallId: string, approved: boolean, reason?: string): void {
    this.#runner.approve(queryId, toolCallId, approved, reason);
  }

  /**
   * Sends a command and resolves with the `notification` answering it (matched by id).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const n = await client.command("stats");
   * }
   * ```
   */
  command(name: string, args?: Record<string, unknown>): Promise<NotificationFrame> {
    const id = uuid();
    const frame: ClientFrame = { type: "command", name, id };
    if (args) frame.args = args;
    return this.#call<NotificationFrame>(id, frame, (f) => f.type === "notification");
  }

  /**
   * Cancels query `id`, or the one in flight when omitted.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const handle = client.ask("A long story");
   *   await client.cancel(handle.id);
   * }
   * ```
   */
  cancel(id?: string): Promise<NotificationFrame> {
    return this.command("cancel", id === undefined ? undefined : { id });
  }

  /**
   * Clears the conversation history kept by the server.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   await client.reset();
   * }
   * ```
   */
  reset(): Promise<NotificationFrame> {
    return this.command("reset");
  }

  /**
   * Fetches the conversation history (a `history` notification).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const n = await client.history();
   *   console.log(n.messages ?? n.content);
   * }
   * ```
   */
  history(): Promise<NotificationFrame> {
    return this.command("history");
  }

  /**
   * Fetches session statistics (a `stats` notification).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   console.log(await client.stats());
   * }
   * ```
   */
  stats(): Promise<NotificationFrame> {
    return this.command("stats");
  }

  /**
   * Lists the user's conversations, newest first (the `conversations` command; v1.1).
   * Rejects with the server's `AgentError`, e.g. `unknown_command` on a server without memory.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const { conversations } = await client.conversations();
   *   for (const c of conversations) console.log(c.name, c.messages, c.updated_at);
   * }
   * ```
   */
  conversations(): Promise<ConversationsFrame> {
    return this.#memoryCommand<ConversationsFrame>("conversations", "conversations");
  }

  /**
   * Searches what was said in all the user's conversations, best hits first (the
   * `search_memory` command; v1.1).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const { results } = await client.searchMemory("flight to Lisbon", { limit: 5 });
   *   for (const r of results) console.log(r.conversation, r.role, r.content, r.score);
   * }
   * ```
   */
  searchMemory(query: string, options: SearchMemoryOptions = {}): Promise<SearchMemoryFrame> {
    const args: Record<string, unknown> = { query };
    if (options.limit !== undefined) args.limit = options.limit;
    return this.#memoryCommand<SearchMemoryFrame>("search_memory", "search_memory", args);
  }

  /**
   * Forgets the history of one conversation, or of all the user's conversations when none is
   * named (the `clear_memory` command; v1.1). `cleared` says how many conversations were emptied;
   * they stay, empty, and can go on.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const { cleared } = await client.clearMemory("old-trip");
   *   console.log(`${cleared} conversation emptied`);
   * }
   * ```
   */
  clearMemory(conversation?: string): Promise<MemoryClearedFrame> {
    let args: Record<string, unknown> | undefined;
    try {
      if (conversation !== undefined) args = { conversation: checkConversation(conversation) };
    } catch (e) {
      return Promise.reject(e); // a promise-returning method rejects, never throws
    }
    return this.#memoryCommand<MemoryClearedFrame>("clear_memory", "memory_cleared", args);
  }

  /**
   * Whether query `id` was sent by this client (in flight or among its recent ones). In a
   * conversation, events also carry the queries other sockets sent; this tells them apart.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000", { conversation: "team" });
   * client.on("response", (r) => {
   *   if (r.done && !client.isOwnQuery(r.id)) console.log("another tab got:", r.content);
   * });
   * ```
   */
  isOwnQuery(id: string): boolean {
    return this.#asks.has(id) || this.#ownQueries.has(id);
  }

  /**
   * Rates a response; resolves with the `feedback_received` notification.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   const handle = client.ask("Hi");
   *   await handle.response;
   *   await client.feedback(handle.id, "up", "Spot on");
   * }
   * ```
   */
  feedback(id: string, rating: "up" | "down", comment?: string): Promise<NotificationFrame> {
    const frame: ClientFrame = { type: "feedback", id, rating };
    if (comment !== undefined) frame.comment = comment;
    // The answer may omit the id; then answers go to pending feedback in order (FIFO).
    return this.#call<NotificationFrame>(
      id,
      frame,
      (f) => f.type === "notification" && f.event === "feedback_received",
    );
  }

  /**
   * Measures the round trip in ms (from the moment the ping is written to the socket).
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * async function demo() {
   *   console.log(`${await client.ping()} ms`);
   * }
   * ```
   */
  ping(): Promise<number> {
    const id = uuid();
    let t0 = 0;
    return this.#call<PongFrame>(
      id,
      { type: "ping", id },
      (f) => f.type === "pong",
      () => t0 = performance.now(),
    ).then(() => performance.now() - t0);
  }

  /**
   * Sends a raw frame now, or queues it while disconnected. Throws `AgentError`
   * `offline_queue_full` past `maxOfflineQueue`, and `closed` after the client stopped.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * client.send({ type: "feedback", id: "q1", rating: "down" }); // queued until connected
   * ```
   */
  send(frame: ClientFrame): void {
    this.#transport.send(JSON.stringify(frame));
  }

  /**
   * Closes for good: no reconnect; pending queries and calls reject with `closed`.
   *
   * @example
   * ```ts
   * import { AgentClient } from "./agent_client.ts";
   * const client = new AgentClient("ws://127.0.0.1:8000");
   * client.close();
   * ```
   */
  close(code: number = CLOSE.normal, reason = "Client closed"): void {
    this.#transport.close(code, reason);
  }

  // -------------------------------------------------------------------------------------------
  // Connection lifecycle

  /** The URL of the next socket: a join or resume of the conversation, or of the session. */
  #socketUrl(): string {
    if (this.#conversation !== undefined) {
      return conversationUrl(
        this.#url,
        this.#conversation,
        this.#joined ? this.#lastSeq : undefined,
      );
    }
    return this.#sessionId ? resumeUrl(this.#url, this.#sessionId, this.#lastSeq) : this.#url;
  }

  /** A socket went away or a new one is opening: its handshake and replay start over. */
  #resetSocket() {
    this.#handshaken = false;
    this.#replayLeft = 0;
    clearTimeout(this.#replayTimer);
  }

  #onStop(err: AgentError) {
    this.#resetSocket();
    this.#sessionEnded = false;
    if (err.code === "session_timeout") [this.#sessionId, this.#joined] = [undefined, false];
    const pending = [...this.#asks.values(), ...this.#calls];
    this.#asks.clear();
    this.#calls.clear();
    this.#answers.clear();
    for (const p of pending) p.fail(err.withId(p.frame.id));
  }

  // -------------------------------------------------------------------------------------------
  // Incoming frames

  #onMessage(data: unknown) {
    let f: AnyFrame;
    try {
      const text = typeof data === "string" ? data : textDecoder.decode(data as ArrayBuffer);
      f = JSON.parse(text);
    } catch {
      return; // the protocol only sends JSON text frames; nothing sensible to do with others
    }
    if (!f || typeof f !== "object" || typeof f.type !== "string") return;
    if (this.#handshaken) return this.#accept(f);

    if (f.type === "notification" && (f.event === "connected" || f.event === "resumed")) {
      return this.#onHandshake(f as NotificationFrame);
    }
    // An error before the handshake explains a refused resume or login; it may already be
    // numbered in a new session, so it bypasses the seq filter of the old one.
    if (f.type === "error") this.#dispatch(f);
    else this.#accept(f);
  }

  #onHandshake(f: NotificationFrame) {
    const resumed = f.event === "resumed";
    const previous = this.#sessionId;
    const sessionId = typeof f.session_id === "string" ? f.session_id : previous ?? "";
    // The resumed notification is numbered relative to the replay in ways servers may differ
    // on (this one sends seq 0), so it neither passes the seq filter nor moves lastSeq.
    const replayed = resumed ? Math.max(0, Number(f.replayed) || 0) : 0;
    if (!resumed) {
      this.#lastSeq = typeof f.seq === "number" ? f.seq : 0;
      this.#sessionEnded = false;
      if (f.limits && typeof f.limits === "object") {
        this.#limits = f.limits as Record<string, unknown>;
      }
      if (Array.isArray(f.features)) this.#features = f.features.map(String);
      if (typeof f.heartbeat_ms === "number") this.#transport.limitHeartbeat(f.heartbeat_ms);
    }
    this.#sessionId = sessionId;
    const socketId = typeof f.socket_id === "string"
      ? f.socket_id
      : typeof f.socket === "string"
      ? f.socket
      : undefined;
    this.#socketId = socketId;
    if (socketId !== undefined) remember(this.#ownSockets, socketId, OWN_SOCKETS);
    if (typeof f.sockets === "number") this.#sockets = f.sockets;
    const wasJoined = this.#joined;
    if (this.#conversation !== undefined) this.#joined = true;
    this.#handshaken = true;
    this.#replayLeft = replayed;
    this.#transport.opened();
    if (replayed) this.#replayTimer = setTimeout(() => this.#afterReplay(), REPLAY_GRACE_MS);

    // Events come last: a listener may call close(), which every step below must respect.
    // A `connected` answer to a resume means the old session is gone (in a conversation: its
    // frames since last_seq are, so the queries this client awaits may never end here).
    const lost = !resumed && (previous !== undefined || wasJoined);
    if (lost || sessionId !== previous) {
      this.#events.emit("session", { sessionId, previousSessionId: previous, lost });
    }
    if (lost) {
      // Queries the old session had are gone; frames never sent go to the new session. The
      // server's not_found / resume_gap error, before or after `connected`, is an error event.
      const why = wasJoined
        ? `Frames of conversation ${this.#conversation} were missed; what was in flight is given up`
        : `Session ${previous} expired; a new session started`;
      this.#failSent(new AgentError("session_lost", why, { retryable: true }));
    }
    if (this.#open()) this.#dispatch(f);
    if (this.#open()) {
      const open: AgentClientEvents["open"] = { sessionId, resumed, replayed };
      if (this.#conversation !== undefined) {
        Object.assign(open, { socketId, conversation: this.#conversation });
      }
      this.#events.emit("open", open);
    }
    if (!replayed) this.#afterReplay();
  }

  // A method, not an inline comparison: TypeScript cannot see that listeners change the state.
  #open(): boolean {
    return this.#transport.state === "open";
  }

  #accept(f: AnyFrame) {
    const replaying = this.#replayLeft > 0;
    if (replaying) this.#replayLeft--;
    if (!isDuplicate(f.seq, this.#lastSeq)) {
      if (typeof f.seq === "number" && f.seq > this.#lastSeq) this.#lastSeq = f.seq;
      this.#dispatch(f);
    }
    if (replaying && this.#replayLeft === 0) this.#afterReplay();
  }

  /** The session is caught up: redo what the old socket may have swallowed, then the queue. */
  #afterReplay() {
    clearTimeout(this.#replayTimer);
    if (!this.#open()) return; // a listener closed the client meanwhile
    this.#replayLeft = 0;
    // A frame written to a dying socket may never have reached the server. If the replay holds
    // no answer to it, the server never read it (every frame gets an answer), so sending it
    // again cannot duplicate it. A tool answer sent twice is refused with `not_found`, which
    // is then taken as its acknowledgement.
    for (const p of [...this.#asks.values(), ...this.#calls, ...this.#answers.values()]) {
      if (!p.sent || p.acked) continue;
      if (++p.resends <= MAX_RESENDS) {
        this.#transport.write(JSON.stringify(p.frame));
        continue;
      }
      const id = p.frame.id;
      if (id !== undefined && this.#asks.get(id) === p) this.#asks.delete(id);
      this.#calls.delete(p as Call);
      for (const [key, a] of this.#answers) if (a === p) this.#answers.delete(key);
      const why = "The connection kept dropping before the server answered";
      p.fail(new AgentError("delivery_failed", why, { retryable: true, id }));
    }
    this.#transport.release();
  }

  #dispatch(f: AnyFrame) {
    this.#events.emit("frame", f as ServerFrame);
    // A frame that answers another socket of the conversation (its pong, an error about its
    // frame, its `connected`) only counts for seq: it is no answer to anything of this client.
    if (typeof f.socket === "string" && !this.#ownSockets.has(f.socket)) return;
    const id = typeof f.id === "string" ? f.id : undefined;
    const ask = id === undefined ? undefined : this.#asks.get(id);
    if (ask) ask.acked = true;
    switch (f.type) {
      case "notification":
        if (f.event === "session_timeout") this.#sessionEnded = true;
        if (f.event === "presence" && typeof f.sockets === "number") this.#sockets = f.sockets;
        this.#events.emit("notification", f as NotificationFrame);
        if (f.event === "presence") this.#events.emit("presence", f as unknown as PresenceFrame);
        return this.#settleCall(f);
      case "status":
        ask?.events.push(f as StatusFrame);
        return this.#events.emit("status", f as StatusFrame);
      case "pong":
        this.#events.emit("pong", f as PongFrame);
        return this.#settleCall(f);
      case "reasoning": {
        const r = f as unknown as ReasoningFrame;
        this.#events.emit("reasoning", r);
        if (ask && typeof r.delta === "string") {
          ask.reasoning.push(r.delta);
          ask.events.push(r);
        }
        return;
      }
      case "tool_call": {
        const call = f as unknown as ToolCallFrame;
        this.#events.emit("tool_call", call);
        if (!ask || typeof call.tool_call_id !== "string") return;
        ask.events.push(call);
        // Only this client's queries: in a shared conversation the socket that asked answers.
        return this.#runner.onToolCall(call);
      }
      case "tool_result": {
        const result = f as unknown as ToolResultFrame;
        if (typeof result.tool_call_id !== "string") return;
        this.#settleAnswers(result.tool_call_id);
        this.#runner.settled(result.tool_call_id);
        this.#events.emit("tool_result", result);
        return ask?.events.push(result);
      }
      case "error": {
        const toolCallId = typeof f.tool_call_id === "string" ? f.tool_call_id : undefined;
        // A resent tool answer the server already had: the refusal confirms delivery.
        if (id === undefined && toolCallId && this.#settleAnswers(toolCallId)) return;
        const err = AgentError.fromFrame(f as ErrorFrame);
        this.#events.emit("error", err);
        if (ask) {
          this.#asks.delete(id!);
          return ask.fail(err);
        }
        const call = id === undefined ? undefined : this.#findCall(id);
        if (call) {
          this.#calls.delete(call);
          call.fail(err);
        }
        return;
      }
      case "response": {
        const r = f as ResponseFrame;
        this.#events.emit("response", r);
        if (!ask) return;
        ask.events.push(r);
        if (typeof r.delta === "string" && r.delta) {
          ask.deltas.push(r.delta);
          ask.streamed = true;
        }
        if (r.done !== true) return;
        // stream:false answers come whole; the deltas iterator still yields the text once.
        if (!ask.streamed && typeof r.content === "string" && r.content) ask.deltas.push(r.content);
        this.#asks.delete(id!);
        ask.resolve(r as FinalResponse);
      }
    }
  }

  #findCall(id: string): Call | undefined {
    for (const c of this.#calls) if (c.id === id) return c;
  }

  #settleCall(f: AnyFrame) {
    const id = typeof f.id === "string" ? f.id : undefined;
    for (const c of this.#calls) {
      if ((id === undefined ? c.frame.type === "feedback" : c.id === id) && c.matches(f)) {
        this.#calls.delete(c);
        return c.resolve(f);
      }
    }
  }

  /** The server has the answers about `toolCallId`; returns whether any was resent. */
  #settleAnswers(toolCallId: string): boolean {
    let resent = false;
    for (const type of ["tool_result", "approval"]) {
      const a = this.#answers.get(`${type}:${toolCallId}`);
      if (!a) continue;
      resent ||= a.resends > 0;
      this.#answers.delete(`${type}:${toolCallId}`);
    }
    return resent;
  }

  // -------------------------------------------------------------------------------------------
  // Outgoing frames

  #call<T extends AnyFrame>(
    id: string,
    frame: ClientFrame,
    matches: (f: AnyFrame) => boolean,
    onSent?: () => void,
  ): Promise<T> {
    return new Promise<T>((resolve, fail) => {
      const settle = resolve as (f: AnyFrame) => void; // `matches` vouches for the type
      const call: Call = {
        id,
        frame,
        sent: false,
        acked: false,
        resends: 0,
        matches,
        fail,
        resolve: settle,
      };
      // A throw here (queue full, client closed) rejects the promise: executors catch.
      this.#transport.send(JSON.stringify(frame), () => (call.sent = true, onSent?.()));
      this.#calls.add(call);
    });
  }

  /** A command whose answer is the notification `event`; any other answer is an error. */
  async #memoryCommand<T extends NotificationFrame>(
    name: string,
    event: string,
    args?: Record<string, unknown>,
  ): Promise<T> {
    const n = await this.command(name, args);
    if (n.event !== event) {
      throw new AgentError("unexpected_answer", `Expected ${event}, got ${n.event}`, { id: n.id });
    }
    return n as T;
  }

  /** Sends a tool answer, kept until the server's `tool_result` for the call confirms it. */
  #answer(frame: ToolAnswerFrame) {
    const answer: Answer = { frame, sent: false, acked: false, resends: 0, fail: noop };
    this.#transport.send(JSON.stringify(frame), () => answer.sent = true);
    // The query may be over already (its end withdraws answers); then nobody waits for this.
    if (this.#asks.has(frame.id)) this.#answers.set(`${frame.type}:${frame.tool_call_id}`, answer);
  }

  /** Rejects what the server may have had; frames never sent stay queued for the next session. */
  #failSent(err: AgentError, unackedOnly = false) {
    for (const [id, ask] of this.#asks) {
      if (ask.sent && !(unackedOnly && ask.acked)) {
        this.#asks.delete(id);
        ask.fail(err.withId(id));
      }
    }
    for (const c of this.#calls) {
      if (c.sent && !(unackedOnly && c.acked)) {
        this.#calls.delete(c);
        c.fail(err);
      }
    }
    for (const [key, a] of this.#answers) if (a.sent) this.#answers.delete(key);
  }

  /** Rejects a query the server would refuse for size, rather than risk a 1009 close. */
  #checkLimits(frame: QueryFrame) {
    const maxChars = this.#limits.max_content_chars;
    const maxBytes = this.#limits.max_message_bytes;
    const tooLong = typeof maxChars === "number" && frame.content.length > maxChars;
    if (
      tooLong ||
      (typeof maxBytes === "number" && textEncoder.encode(JSON.stringify(frame)).length > maxBytes)
    ) {
      throw new AgentError("message_too_large", "Query exceeds the server's size limits", {
        id: frame.id,
      });
    }
  }
}
