/**
 * React hooks for the agent (React 18 and 19): `useAgent` holds one connection for a component
 * tree and re-renders on its state; `useAgentChat` builds a chat on it — messages with streamed
 * text and reasoning, a status, `send`, `cancel`, tool events and approvals.
 *
 * The connection opens when the component mounts and closes when it unmounts (or when the URL
 * or the `conversation` option changes). Options are read when it opens; callbacks in them (`token`, tool `execute`,
 * `onApproval`) always run their latest version.
 *
 * The examples here are `ignore`d by `deno test --doc`: they need React, which only the npm
 * build (tsc with `@types/react`) and the package tests (React 18 and 19 under Node) have.
 *
 * @example
 * ```tsx ignore
 * import { useAgentChat } from "agent-websocket-client/react";
 *
 * export function Chat() {
 *   const chat = useAgentChat("wss://<ref>.supabase.co/functions/v1/agent_websocket");
 *   return (
 *     <div>
 *       {chat.messages.map((m) => <p key={m.id}><b>{m.role}</b> {m.content}</p>)}
 *       {chat.approvals.map((a) => (
 *         <button key={a.toolCallId} onClick={() => chat.approve(a.toolCallId, true)}>
 *           Allow {a.tool}
 *         </button>
 *       ))}
 *       <button onClick={() => chat.send("Hello!")} disabled={chat.status !== "ready"}>Send</button>
 *       {chat.status === "streaming" && <button onClick={chat.cancel}>Stop</button>}
 *     </div>
 *   );
 * }
 * ```
 * @module
 */
import { useCallback, useEffect, useRef, useState } from "react";
import {
  AgentClient,
  type AgentClientOptions,
  AgentError,
  type ApprovalRequest,
  type AskHandle,
  type AskOptions,
  type ClientFrame,
  type ClientState,
  type ClientTools,
  type ServerFrame,
  type StatusState,
  type ToolExecutor,
  type Usage,
} from "./mod.ts";

// ---------------------------------------------------------------------------------------------
// useAgent

/**
 * Options of {@linkcode useAgent}: the client's, plus how many recent frames to keep.
 *
 * @example
 * ```ts ignore
 * const opts: UseAgentOptions = { token: () => session.access_token, maxEvents: 20 };
 * ```
 */
export interface UseAgentOptions extends AgentClientOptions {
  /** How many recent frames `events` keeps. Default 50. */
  maxEvents?: number;
}

/**
 * What {@linkcode useAgent} returns.
 *
 * @example
 * ```tsx ignore
 * const { state, sessionId } = useAgent(url);
 * return <small>{state} {sessionId}</small>;
 * ```
 */
export interface UseAgentResult {
  /** The client (undefined until the component has mounted, e.g. during server rendering). */
  client: AgentClient | undefined;
  /** Connection state: `connecting`, `open`, `reconnecting`, `closed`. */
  state: ClientState;
  sessionId: string | undefined;
  /** The conversation joined (the `conversation` option), if any. */
  conversation: string | undefined;
  /** This socket's id in the conversation (new after every reconnect). */
  socketId: string | undefined;
  /** How many sockets are in the conversation (tabs, devices), this one included. */
  sockets: number | undefined;
  /** The latest error (server `error` frames and connection failures). */
  error: AgentError | undefined;
  /** The most recent frames, oldest first, at most `maxEvents`. */
  events: ServerFrame[];
  /** Sends a raw frame (queued while offline). */
  send(frame: ClientFrame): void;
  /** Asks a question; see `AgentClient.ask`. Throws before the component mounted. */
  ask(content: string, options?: AskOptions): AskHandle;
}

/** Tools whose `execute` always calls the latest render's version, so the socket can stay. */
function latestTools(initial: ClientTools, latest: { current: UseAgentOptions }): ClientTools {
  const out: ClientTools = {};
  for (const [name, tool] of Object.entries(initial)) {
    out[name] = {
      ...tool,
      execute: (args, ctx) => (latest.current.tools?.[name] ?? tool).execute(args, ctx),
    };
  }
  return out;
}

/**
 * Opens a connection for the component's lifetime and re-renders on its state, session,
 * presence and frames. With `conversation`, every tab that joins the same name shares one
 * conversation; changing it joins the other one (a new connection).
 *
 * @example
 * ```tsx ignore
 * function Status() {
 *   const agent = useAgent("ws://127.0.0.1:8000");
 *   return <button onClick={() => agent.send({ type: "ping" })}>{agent.state}</button>;
 * }
 * ```
 */
export function useAgent(url: string, options: UseAgentOptions = {}): UseAgentResult {
  const latest = useRef(options);
  latest.current = options;
  const [client, setClient] = useState<AgentClient>();
  const [state, setState] = useState<ClientState>("idle");
  const [sessionId, setSessionId] = useState<string>();
  const [socketId, setSocketId] = useState<string>();
  const [sockets, setSockets] = useState<number>();
  const [error, setError] = useState<AgentError>();
  const [events, setEvents] = useState<ServerFrame[]>([]);

  useEffect(() => {
    const { token, onApproval: _, tools, maxEvents: __, ...rest } = latest.current;
    const c = new AgentClient(url, {
      ...rest,
      token: typeof token === "function"
        ? () => (latest.current.token as () => string | Promise<string>)()
        : token,
      tools: tools && latestTools(tools, latest),
    });
    // Some transitions finish after the event that announces them (a terminal close stops the
    // client right after its `close` event), so the state is read once the event is over.
    const sync = () =>
      queueMicrotask(() => {
        setState(c.state);
        setSessionId(c.sessionId);
        setSocketId(c.socketId);
        setSockets(c.sockets);
      });
    const offs = [
      c.on("open", sync),
      c.on("close", sync),
      c.on("reconnecting", sync),
      c.on("session", sync),
      c.on("presence", sync),
      c.on("error", (e) => (setError(e), sync())),
      c.on("frame", (f) => {
        const max = latest.current.maxEvents ?? 50;
        setEvents((list) => [...list.slice(Math.max(0, list.length - max + 1)), f]);
      }),
      // A handler in the options decides; without one the app does, via useAgentChat or
      // client.approve().
      c.on("approval", (request) => {
        const handler = latest.current.onApproval;
        if (!handler) return;
        Promise.resolve()
          .then(() => handler(request))
          .then((d) => typeof d === "boolean" ? { approved: d } : d)
          .then(
            (d) => request.approve(d.approved, d.reason),
            (e) => request.approve(false, `Approval failed: ${e}`),
          )
          .catch(() => {}); // the client closed meanwhile
      }),
    ];
    setClient(c);
    void c.connect();
    sync();
    return () => {
      for (const off of offs) off();
      c.close();
    };
  }, [url, options.conversation]);

  const send = useCallback((frame: ClientFrame) => {
    if (!client) throw new AgentError("closed", "Not connected yet: the component has not mounted");
    client.send(frame);
  }, [client]);
  const ask = useCallback((content: string, opts?: AskOptions) => {
    if (!client) throw new AgentError("closed", "Not connected yet: the component has not mounted");
    return client.ask(content, opts);
  }, [client]);

  const conversation = client?.conversation ?? options.conversation;
  return { client, state, sessionId, conversation, socketId, sockets, error, events, send, ask };
}

// ---------------------------------------------------------------------------------------------
// useAgentChat

/**
 * One tool call of an answer, as it progresses.
 *
 * @example
 * ```tsx ignore
 * {m.tools.map((t) => <li key={t.toolCallId}>{t.tool}: {t.state}</li>)}
 * ```
 */
export interface ChatToolCall {
  toolCallId: string;
  tool: string;
  arguments: Record<string, unknown>;
  executor: ToolExecutor;
  needsApproval: boolean;
  /** `awaiting_approval` until decided, `running` until the result, then `done` or `failed`. */
  state: "awaiting_approval" | "running" | "done" | "failed";
  result?: unknown;
  error?: string;
  durationMs?: number;
}

/**
 * A message of the chat. The user's and the answer share `queryId`; `id` is unique. In a
 * conversation what other tabs or devices asked appears too — their question (from the query's
 * first `status` frame) and its answer — with `own: false`.
 *
 * @example
 * ```tsx ignore
 * <p key={m.id} className={m.role}>{m.content}{!m.done && "…"}</p>
 * ```
 */
export interface ChatMessage {
  id: string;
  queryId: string;
  role: "user" | "assistant";
  /** False for an answer to a query another socket of the conversation sent. */
  own: boolean;
  /** The text so far (streamed), or the whole text once `done`. */
  content: string;
  /** The model's reasoning so far, when it streams any. */
  reasoning: string;
  done: boolean;
  /** The server's latest `status` state for this query (`queued`, `thinking`, `retrying`, …). */
  status?: StatusState;
  tools: ChatToolCall[];
  /** `stop`, `length`, `cancelled`, `max_iterations`, … once done. */
  finishReason?: string;
  usage?: Usage | null;
  error?: { code: string; message: string };
}

/**
 * What {@linkcode useAgentChat} returns.
 *
 * @example
 * ```tsx ignore
 * const { messages, status, send, cancel } = useAgentChat(url);
 * ```
 */
export interface UseAgentChatResult {
  messages: ChatMessage[];
  /**
   * `ready` (nothing in flight), `submitted` (sent, no answer text yet), `streaming` (text,
   * reasoning or tools arriving), `error` (the last query failed).
   */
  status: "ready" | "submitted" | "streaming" | "error";
  /** Sends a message; returns its query id. */
  send(content: string, options?: AskOptions): string | undefined;
  /** Cancels the query in flight, if any. */
  cancel(): void;
  /** Tool calls waiting for a decision (when there is no `onApproval` option). */
  approvals: ApprovalRequest[];
  /** Decides on a pending tool call. */
  approve(toolCallId: string, approved: boolean, reason?: string): void;
  /** Clears the messages here and the history on the server. */
  clear(): Promise<void>;
  /** The connection beneath. */
  agent: UseAgentResult;
}

type Update = (m: ChatMessage) => ChatMessage;

function updateTool(m: ChatMessage, toolCallId: string, change: Partial<ChatToolCall>) {
  return {
    ...m,
    tools: m.tools.map((t) => t.toolCallId === toolCallId ? { ...t, ...change } : t),
  };
}

/** What a frame of one of our queries changes in its answer. */
function applyFrame(f: ServerFrame): Update | undefined {
  switch (f.type) {
    case "status":
      return (m) => ({ ...m, status: f.state });
    case "reasoning":
      return (m) => ({ ...m, reasoning: m.reasoning + f.delta });
    case "response":
      if (!f.done) return (m) => ({ ...m, content: m.content + (f.delta ?? "") });
      return (m) => ({
        ...m,
        content: typeof f.content === "string" ? f.content : m.content,
        done: true,
        finishReason: f.finish_reason,
        usage: f.usage,
      });
    case "tool_call":
      return (m) =>
        m.tools.some((t) => t.toolCallId === f.tool_call_id) ? m : {
          ...m,
          tools: [...m.tools, {
            toolCallId: f.tool_call_id,
            tool: f.tool,
            arguments: f.arguments ?? {},
            executor: f.executor,
            needsApproval: f.needs_approval === true,
            state: f.needs_approval ? "awaiting_approval" : "running",
          }],
        };
    case "tool_result":
      return (m) =>
        updateTool(m, f.tool_call_id, {
          state: f.ok ? "done" : "failed",
          result: f.result,
          error: f.error,
          durationMs: f.duration_ms,
        });
    case "error":
      return (m) => ({ ...m, done: true, error: { code: f.code, message: f.message } });
  }
}

/**
 * Whether `f` is the first frame seen of a query another socket of the conversation sent: a
 * frame only queries have (an error may answer a command, so it starts nothing), for this
 * socket (not one addressed to another), and not one of this client's own queries.
 */
function startsTheirAnswer(client: AgentClient, f: ServerFrame, id: string): boolean {
  if (client.conversation === undefined || client.isOwnQuery(id)) return false;
  if (typeof f.socket === "string" && f.socket !== client.socketId) return false;
  return f.type === "status" || f.type === "response" || f.type === "reasoning" ||
    f.type === "tool_call" || f.type === "tool_result";
}

/**
 * A chat over {@linkcode useAgent}: messages with streamed text and reasoning, the status of the
 * query in flight, tool calls as they run, and approvals to decide.
 *
 * @example
 * ```tsx ignore
 * function Chat() {
 *   const { messages, send, status } = useAgentChat("ws://127.0.0.1:8000");
 *   return (
 *     <form onSubmit={(e) => { e.preventDefault(); send(new FormData(e.currentTarget).get("q") as string); }}>
 *       {messages.map((m) => <p key={m.id}>{m.content}</p>)}
 *       <input name="q" /> <button disabled={status !== "ready"}>Send</button>
 *     </form>
 *   );
 * }
 * ```
 */
export function useAgentChat(url: string, options: UseAgentOptions = {}): UseAgentChatResult {
  const agent = useAgent(url, options);
  const { client } = agent;
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [approvals, setApprovals] = useState<ApprovalRequest[]>([]);
  const [failed, setFailed] = useState(false);
  const ours = useRef(new Set<string>());
  // Queries other sockets of the conversation sent, whose answers are showing here.
  const theirs = useRef(new Set<string>());

  const update = useCallback((queryId: string, change: Update) => {
    setMessages((list) =>
      list.map((m) => m.queryId === queryId && m.role === "assistant" ? change(m) : m)
    );
  }, []);

  useEffect(() => {
    if (!client) return;
    const refreshApprovals = () => setApprovals(client.pendingApprovals);
    const offs = [
      client.on("frame", (f) => {
        if (typeof f.id !== "string") return;
        const own = ours.current.has(f.id);
        if (!own && !theirs.current.has(f.id)) {
          if (!startsTheirAnswer(client, f, f.id)) return;
          theirs.current.add(f.id);
          const queryId = f.id;
          const asked = f.type === "status" ? f.question : undefined;
          const question: ChatMessage[] = typeof asked === "string"
            ? [{
              id: `${queryId}:user`,
              queryId,
              role: "user",
              own: false,
              content: asked,
              reasoning: "",
              tools: [],
              done: true,
            }]
            : [];
          setMessages((list) => [...list, ...question, {
            id: queryId,
            queryId,
            role: "assistant",
            own: false,
            content: "",
            reasoning: "",
            tools: [],
            done: false,
          }]);
        }
        const change = applyFrame(f);
        if (change) update(f.id, change);
        if (f.type === "tool_result") refreshApprovals();
        if ((f.type === "response" && f.done) || f.type === "error") {
          if (!own) return void theirs.current.delete(f.id);
          ours.current.delete(f.id);
          setFailed(f.type === "error");
          refreshApprovals();
        }
      }),
      client.on("approval", refreshApprovals),
    ];
    return () => offs.forEach((off) => off());
  }, [client, update]);

  const send = useCallback((content: string, opts?: AskOptions) => {
    if (!client) return undefined;
    const handle = client.ask(content, opts);
    const queryId = handle.id;
    ours.current.add(queryId);
    const base = { queryId, own: true, reasoning: "", tools: [], done: false };
    setFailed(false);
    setMessages((list) => [
      ...list,
      { ...base, id: `${queryId}:user`, role: "user", content, done: true },
      { ...base, id: queryId, role: "assistant", content: "" },
    ]);
    // Failures no frame reports (session lost, client closed, queue full) end the answer too.
    handle.response.catch((e: AgentError) => {
      if (!ours.current.delete(queryId)) return;
      setFailed(true);
      update(queryId, (m) => ({ ...m, done: true, error: { code: e.code, message: e.message } }));
    });
    return queryId;
  }, [client, update]);

  const cancel = useCallback(() => {
    for (const id of ours.current) void client?.cancel(id).catch(() => {});
  }, [client]);

  const approve = useCallback((toolCallId: string, approved: boolean, reason?: string) => {
    const request = client?.pendingApprovals.find((r) => r.toolCallId === toolCallId);
    if (!client || !request) return;
    request.approve(approved, reason);
    setApprovals(client.pendingApprovals);
    update(
      request.queryId,
      (m) => updateTool(m, toolCallId, { state: approved ? "running" : "failed" }),
    );
  }, [client, update]);

  const clear = useCallback(async () => {
    setMessages([]);
    ours.current.clear();
    theirs.current.clear();
    if (client) await client.reset();
  }, [client]);

  const last = messages.at(-1);
  const status = last && !last.done
    ? (last.content || last.reasoning || last.tools.length ? "streaming" : "submitted")
    : failed
    ? "error"
    : "ready";
  return { messages, status, send, cancel, approvals, approve, clear, agent };
}
