/**
 * Interactive terminal chat with the agent, built on the SDK. Answers stream as they arrive;
 * input stays live meanwhile, so `/cancel` works mid-answer. Survives server restarts by
 * reconnecting and resuming. Set `AGENT_TOKEN` to send a JWT. Shows the model's reasoning
 * (dimmed), tool calls and their results; a tool that needs approval is asked about with y/n,
 * and the next line typed answers it.
 *
 * Conversations (v1.1): `/join <name>` reconnects into the user's conversation of that name,
 * which other terminals or tabs may share — their questions' answers stream here too, and
 * who comes and goes is shown. `/conversations` lists the user's conversations, `/search
 * <words>` searches what was said in them, `/clear [name]` forgets one (or all).
 *
 * Commands: `/cancel`, `/reset`, `/history`, `/stats`, `/join <name>`, `/conversations`,
 * `/search <words>`, `/clear [name]`, `/help`, `/quit`.
 *
 * @example
 * ```sh
 * deno run -A client/chat.ts                      # ws://127.0.0.1:8000
 * deno run -A client/chat.ts wss://<ref>.supabase.co/functions/v1/agent_websocket
 * deno run -A client/chat.ts "ws://127.0.0.1:8000/?conversation=trip"   # join one at start
 * ```
 * @module
 */
import {
  AgentClient,
  AgentError,
  type ApprovalRequest,
  checkConversation,
  type ConversationsFrame,
  type NotificationFrame,
  type SearchMemoryFrame,
  type StatusFrame,
  type ToolResultFrame,
} from "./mod.ts";

const url = Deno.args[0] ?? "ws://127.0.0.1:8000";
const color = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
const encoder = new TextEncoder();
// Whether the cursor sits after answer text, so a status line must start on a fresh line.
let midLine = false;
let quitting = false;
// What the streamed text on the current line is, so reasoning and answer never share a line.
let streaming: "reasoning" | "answer" | undefined;

function write(text: string) {
  const bytes = encoder.encode(text);
  for (let n = 0; n < bytes.length;) n += Deno.stdout.writeSync(bytes.subarray(n));
  if (text) midLine = !text.endsWith("\n");
}

function dim(text: string) {
  write(`${midLine ? "\n" : ""}${color ? `\x1b[2m${text}\x1b[0m` : text}\n`);
  streaming = undefined;
}

/** Streams a piece of reasoning or answer text, starting a fresh line when the kind changes. */
function stream(kind: "reasoning" | "answer", text: string) {
  if (streaming !== kind && midLine) write("\n");
  if (streaming !== kind && kind === "reasoning") write(color ? "\x1b[2;3m" : "(thinking) ");
  if (streaming === "reasoning" && kind !== "reasoning" && color) write("\x1b[0m");
  streaming = kind;
  write(kind === "reasoning" && color ? `\x1b[2;3m${text}\x1b[0m` : text);
}

/** JSON, cut short for one line. */
function brief(value: unknown, max = 200): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function describe(s: StatusFrame): string {
  switch (s.state) {
    case "queued":
      return `queued${s.position !== undefined ? ` (position ${s.position})` : ""}`;
    case "thinking":
      return "thinking…";
    case "retrying":
      return `retrying (attempt ${s.attempt ?? "?"}, in ${s.delay_ms ?? "?"} ms)`;
    default:
      return s.content ? `${s.state}: ${s.content}` : s.state;
  }
}

function printHistory(n: NotificationFrame) {
  const items = n.messages ?? n.history;
  if (!Array.isArray(items)) return dim(n.content ?? JSON.stringify(n));
  if (items.length === 0) return dim("(history is empty)");
  for (const m of items as { role?: string; content?: unknown }[]) {
    const text = typeof m.content === "string" ? m.content : JSON.stringify(m.content);
    dim(`${m.role ?? "?"}: ${text.length > 300 ? `${text.slice(0, 300)}…` : text}`);
  }
}

function printConversations(n: ConversationsFrame) {
  if (n.conversations.length === 0) return dim("(no conversations yet)");
  for (const c of n.conversations) {
    const here = c.name === client.conversation ? " (here)" : "";
    dim(`${c.name}${here} · ${c.messages} messages · ${c.updated_at}`);
  }
}

function printHits(n: SearchMemoryFrame) {
  if (n.results.length === 0) return dim(`(nothing found for "${n.query}")`);
  for (const h of n.results) {
    const text = h.content.length > 200 ? `${h.content.slice(0, 200)}…` : h.content;
    dim(`${h.conversation} · ${h.role} · ${h.timestamp} · ${h.score.toFixed(2)}: ${text}`);
  }
}

function errorText(e: unknown): string {
  return e instanceof AgentError ? `${e.code}: ${e.message}` : String(e);
}

/** Prints errors that only exist client-side; the server's were printed by the listener. */
function localError(e: unknown) {
  if (!(e instanceof AgentError && e.frame) && !quitting) dim(`[error ${errorText(e)}]`);
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffer = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    for (let i = buffer.indexOf("\n"); i >= 0; i = buffer.indexOf("\n")) {
      yield buffer.slice(0, i).replace(/\r$/, "");
      buffer = buffer.slice(i + 1);
    }
  }
  if (buffer) yield buffer;
}

// Approvals wait here for a y/n line, oldest first.
const approvals: { request: ApprovalRequest; decide(yes: boolean): void }[] = [];

function promptApproval() {
  const next = approvals[0];
  if (!next) return;
  const { tool, arguments: args, executor } = next.request;
  dim(`[approve ${executor} tool ${tool}(${brief(args)})? y/n]`);
}

const token = Deno.env.get("AGENT_TOKEN");
// Queries of other sockets of the conversation already announced, so it is said once.
const announced = new Set<string>();

/** A client (for `conversation`, when given) with every listener of this chat on it. */
function open(conversation?: string): AgentClient {
  const c = new AgentClient(url, {
    token: token || undefined,
    conversation,
    onApproval: (request) =>
      new Promise<boolean>((decide) => {
        approvals.push({ request, decide });
        if (approvals.length === 1) promptApproval();
      }),
  });
  // A client left by /join is heard while it finishes what it had in flight, then never again.
  const on: typeof c.on = (type, listener) =>
    c.on(type, (e) => c === client || finishing.has(c) ? listener(e) : undefined);

  on("status", (s) => {
    if (!c.isOwnQuery(s.id) && !announced.has(s.id)) {
      announced.add(s.id);
      dim(
        typeof s.question === "string"
          ? `[another client of this conversation asked: ${brief(s.question)}]`
          : "[another client of this conversation asked; its answer follows]",
      );
    }
    dim(`[${describe(s)}]`);
  });
  on("reconnecting", (e) => dim(`[reconnecting in ${e.delayMs} ms, attempt ${e.attempt}]`));
  on("open", (e) => {
    const where = e.conversation ? `conversation ${e.conversation}` : `session ${e.sessionId}`;
    dim(
      e.resumed
        ? `[resumed ${where}, ${e.replayed} frames replayed]`
        : `[connected to ${url}, ${where}]`,
    );
  });
  on("session", (e) => e.lost && dim(`[previous session expired; new session ${e.sessionId}]`));
  on("presence", (p) => {
    const change = p.joined ? "a client joined" : p.left ? "a client left" : "presence";
    dim(`[${change}: ${p.sockets} connected to ${c.conversation}]`);
  });
  on("notification", (n) => {
    if (n.event === "shutdown" || n.event === "session_timeout") dim(`[${n.content ?? n.event}]`);
  });
  on("close", (e) => {
    // While the server is down every failed attempt closes too; the reconnecting line says enough.
    if (quitting || (e.willReconnect && c.state !== "open")) return;
    dim(`[disconnected: ${e.code}${e.reason ? ` ${e.reason}` : ""}]`);
    if (!e.willReconnect) Deno.exit(1);
  });
  on("error", (e) => !quitting && dim(`[error ${errorText(e)}]`));
  // Answer text is printed from frame events rather than from `handle.deltas`: events run in
  // frame order, so a status line of the next query can never overtake the tail of this answer
  // (an async iterator lags a few microtasks behind).
  on("response", (r) => {
    if (r.delta) stream("answer", r.delta);
    if (!r.done) return;
    const stats = [r.finish_reason, r.model, r.usage && `${r.usage.total_tokens} tokens`];
    if (r.tool_calls) stats.push(`tools ${r.tool_calls}, model calls ${r.iterations}`);
    if (r.timing) stats.push(`${r.timing.total_ms} ms`);
    dim(`[${stats.filter(Boolean).join(" · ")}]`);
  });
  on("reasoning", (r) => stream("reasoning", r.delta));
  on("tool_call", (call) => {
    const who = call.executor === "client" && c.isOwnQuery(call.id) ? " · run by this client" : "";
    dim(`[tool ${call.tool}(${brief(call.arguments)})${who}]`);
  });
  on("tool_result", onToolResult);
  // Not awaited: input is read (and queued by the SDK) while the server is still unreachable.
  c.connect().catch(() => {});
  return c;
}

function onToolResult(r: ToolResultFrame) {
  // A decision made elsewhere (timeout, another socket) withdraws the question.
  const i = approvals.findIndex((a) => a.request.toolCallId === r.tool_call_id);
  if (i >= 0) {
    approvals.splice(i, 1);
    if (i === 0) promptApproval();
  }
  const took = ` · ${r.duration_ms} ms`;
  dim(
    r.ok
      ? `[tool ${r.tool} → ${brief(r.result)}${took}]`
      : `[tool ${r.tool} failed: ${r.error}${took}]`,
  );
}

// Clients left by /join that still answer what was asked before it.
const finishing = new Set<AgentClient>();
let client = open();

/**
 * Moves to conversation `name`: what is typed from now on goes there, while the client left
 * behind finishes the answers and commands it had in flight, and then closes.
 */
function join(name: string) {
  try {
    checkConversation(name);
  } catch (e) {
    return dim(`[${errorText(e)}]`);
  }
  const old = client;
  finishing.add(old);
  client = open(name);
  dim(`[joining conversation ${name}]`);
  Promise.allSettled([...pending]).then(() => {
    finishing.delete(old);
    old.close();
  });
}

// Answers and commands in flight: the end of input, and /join, wait for them.
const pending = new Set<Promise<unknown>>();

function track(p: Promise<unknown>) {
  pending.add(p);
  p.finally(() => pending.delete(p));
}

function ask(content: string) {
  track(client.ask(content).response.catch(localError));
}

/** Runs a slash command; returns false for /quit. */
function command(line: string): boolean {
  const report = <T>(p: Promise<T>, done: (v: T) => void) => track(p.then(done, localError));
  const [name, ...words] = line.split(/\s+/);
  const rest = words.join(" ");
  switch (name) {
    case "/quit":
    case "/exit":
      return false;
    case "/cancel":
      report(client.cancel(), () => dim("[cancel requested]"));
      break;
    case "/reset":
      report(client.reset(), () => dim("[conversation cleared]"));
      break;
    case "/history":
      report(client.history(), printHistory);
      break;
    case "/stats":
      report(client.stats(), (n) => dim(JSON.stringify(n, null, 2)));
      break;
    case "/join":
      if (!rest) dim("[usage: /join <name>]");
      else join(rest);
      break;
    case "/conversations":
      report(client.conversations(), printConversations);
      break;
    case "/search":
      if (!rest) dim("[usage: /search <words>]");
      else report(client.searchMemory(rest), printHits);
      break;
    case "/clear":
      report(
        client.clearMemory(rest || undefined),
        (n) => dim(`[emptied ${n.cleared} conversation(s): ${n.conversation ?? "all of yours"}]`),
      );
      break;
    default:
      dim(
        [
          "commands:",
          "  /cancel            stop the answer in progress",
          "  /reset             clear this conversation's history",
          "  /history /stats    show the history, the session's numbers",
          "  /join <name>       switch to your conversation <name> (shared with other clients)",
          "  /conversations     list your conversations",
          "  /search <words>    search what was said in all your conversations",
          "  /clear [name]      forget conversation <name>, or every conversation",
          "  /quit",
          "anything else is sent to the agent",
        ].join("\n"),
      );
  }
  return true;
}

dim(`agent chat — ${url} — /help for commands`);

let eof = true;
for await (const raw of lines(Deno.stdin.readable)) {
  if (Deno.stdin.isTerminal()) midLine = false; // the echoed Enter started a fresh line
  const line = raw.trim();
  if (!line) continue;
  if (approvals.length) {
    const yes = /^(y|yes)$/i.test(line);
    if (!yes && !/^(n|no)$/i.test(line)) {
      promptApproval();
      continue;
    }
    approvals.shift()!.decide(yes);
    dim(yes ? "[approved]" : "[denied]");
    promptApproval();
    continue;
  }
  if (!line.startsWith("/")) ask(line);
  else if (!command(line)) {
    eof = false;
    break;
  }
}
// At end of input (e.g. piped questions) let pending answers finish; /quit leaves at once.
if (eof) await Promise.allSettled(pending);
quitting = true;
client.close();
Deno.exit(0);
