/**
 * Interactive terminal chat with the agent, built on the SDK. Answers stream as they arrive;
 * input stays live meanwhile, so `/cancel` works mid-answer. Survives server restarts by
 * reconnecting and resuming. Set `AGENT_TOKEN` to send a JWT. Shows the model's reasoning
 * (dimmed), tool calls and their results; a tool that needs approval is asked about with y/n,
 * and the next line typed answers it.
 *
 * Commands: `/cancel`, `/reset`, `/history`, `/stats`, `/help`, `/quit`.
 *
 * @example
 * ```sh
 * deno run -A client/chat.ts                      # ws://127.0.0.1:8000
 * deno run -A client/chat.ts wss://<ref>.supabase.co/functions/v1/agent_websocket
 * ```
 * @module
 */
import {
  AgentClient,
  AgentError,
  type ApprovalRequest,
  type NotificationFrame,
  type StatusFrame,
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
const client = new AgentClient(url, {
  token: token || undefined,
  onApproval: (request) =>
    new Promise<boolean>((decide) => {
      approvals.push({ request, decide });
      if (approvals.length === 1) promptApproval();
    }),
});

client.on("status", (s) => dim(`[${describe(s)}]`));
client.on("reconnecting", (e) => dim(`[reconnecting in ${e.delayMs} ms, attempt ${e.attempt}]`));
client.on("open", (e) =>
  dim(
    e.resumed
      ? `[resumed session ${e.sessionId}, ${e.replayed} frames replayed]`
      : `[connected to ${url}, session ${e.sessionId}]`,
  ));
client.on(
  "session",
  (e) => e.lost && dim(`[previous session expired; new session ${e.sessionId}]`),
);
client.on("notification", (n) => {
  if (n.event === "shutdown" || n.event === "session_timeout") dim(`[${n.content ?? n.event}]`);
});
client.on("close", (e) => {
  // While the server is down every failed attempt closes too; the reconnecting line says enough.
  if (quitting || (e.willReconnect && client.state !== "open")) return;
  dim(`[disconnected: ${e.code}${e.reason ? ` ${e.reason}` : ""}]`);
  if (!e.willReconnect) Deno.exit(1);
});
client.on("error", (e) => !quitting && dim(`[error ${errorText(e)}]`));
// Answer text is printed from frame events rather than from `handle.deltas`: events run in
// frame order, so a status line of the next query can never overtake the tail of this answer
// (an async iterator lags a few microtasks behind).
client.on("response", (r) => {
  if (r.delta) stream("answer", r.delta);
  if (!r.done) return;
  const stats = [r.finish_reason, r.model, r.usage && `${r.usage.total_tokens} tokens`];
  if (r.tool_calls) stats.push(`tools ${r.tool_calls}, model calls ${r.iterations}`);
  if (r.timing) stats.push(`${r.timing.total_ms} ms`);
  dim(`[${stats.filter(Boolean).join(" · ")}]`);
});
client.on("reasoning", (r) => stream("reasoning", r.delta));
client.on("tool_call", (c) => {
  const who = c.executor === "client" ? " · run by this client" : "";
  dim(`[tool ${c.tool}(${brief(c.arguments)})${who}]`);
});
client.on("tool_result", (r) => {
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
});

const answers = new Set<Promise<unknown>>();

function ask(content: string) {
  const answer = client.ask(content).response.catch(localError);
  answers.add(answer);
  answer.finally(() => answers.delete(answer));
}

/** Runs a slash command; returns false for /quit. */
function command(line: string): boolean {
  const report = <T>(p: Promise<T>, done: (v: T) => void) => p.then(done, localError);
  switch (line.split(/\s+/)[0]) {
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
    default:
      dim("commands: /cancel /reset /history /stats /quit — anything else is sent to the agent");
  }
  return true;
}

// Not awaited: input is read (and queued by the SDK) while the server is still unreachable.
client.connect().catch(() => {});
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
if (eof) await Promise.allSettled(answers);
quitting = true;
client.close();
Deno.exit(0);
