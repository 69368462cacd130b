/// <reference lib="dom" />
/**
 * The chat page's script, built on the client SDK. `deno task build:page`
 * bundles it with the SDK into `chat.js`, which the function inlines into
 * `index.html` (see supabase/functions/_shared/http/page.ts).
 *
 * Settings come from the page's own URL: `?url=wss://…` picks the server
 * (default: the address the page was served from), `?conversation=` the
 * conversation, both also editable under "Connection". The access token is
 * typed in, kept for the tab only, and never put in a URL.
 *
 * @module
 */
import {
  AgentClient,
  AgentError,
  type AskHandle,
  type ServerFrame,
  type StatusFrame,
} from "../../../../client/mod.ts";

type ToolCall = Extract<ServerFrame, { type: "tool_call" }>;
type ToolResult = Extract<ServerFrame, { type: "tool_result" }>;

/** The element with `data-role="<role>"` (the page's only selectors, shared with the tests). */
function $<T extends HTMLElement = HTMLElement>(role: string): T {
  const el = document.querySelector<T>(`[data-role="${role}"]`);
  if (!el) throw new Error(`missing [data-role="${role}"]`);
  return el;
}

/** Creates an element; text goes through textContent, never HTML. */
function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else el.setAttribute(k, v);
  }
  el.append(...children);
  return el;
}

const ui = {
  agent: $("agent"),
  model: $("model"),
  simulator: $("simulator"),
  state: $("state"),
  settings: $<HTMLDetailsElement>("settings"),
  connection: $<HTMLFormElement>("connection"),
  url: $<HTMLInputElement>("url"),
  conversation: $<HTMLInputElement>("conversation"),
  token: $<HTMLInputElement>("token"),
  scroller: $("scroller"),
  log: $("log"),
  hint: $("hint"),
  status: $("status"),
  composer: $<HTMLFormElement>("composer"),
  prompt: $<HTMLTextAreaElement>("prompt"),
  cancel: $<HTMLButtonElement>("cancel"),
  send: $<HTMLButtonElement>("send"),
};

const TOKEN_KEY = "agent_websocket.token";

// ---------------------------------------------------------------------------------------------
// Settings

/** Where the page was served from, as a WebSocket URL; empty when opened from a file. */
function servedFrom(): string {
  if (location.protocol !== "http:" && location.protocol !== "https:") return "";
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${location.pathname}`;
}

function loadSettings() {
  const params = new URLSearchParams(location.search);
  ui.url.value = params.get("url") ?? servedFrom();
  ui.conversation.value = params.get("conversation") ?? "";
  ui.token.value = sessionStorage.getItem(TOKEN_KEY) ?? "";
  if (!ui.url.value) ui.settings.open = true;
}

/**
 * A conversation name as the server takes it (1-128 of A-Z a-z 0-9 _ . : -):
 * what a person types ("trip plans") becomes "trip-plans".
 */
function conversationName(typed: string): string {
  return typed.trim().replace(/[^A-Za-z0-9_.:-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 128);
}

/** Keeps the page's address in step with the settings, so a reload or a shared link keeps them. */
function saveSettings() {
  const params = new URLSearchParams(location.search);
  const set = (name: string, value: string) =>
    value ? params.set(name, value) : params.delete(name);
  set("url", ui.url.value.trim() === servedFrom() ? "" : ui.url.value.trim());
  ui.conversation.value = conversationName(ui.conversation.value);
  set("conversation", ui.conversation.value);
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
  if (ui.token.value.trim()) sessionStorage.setItem(TOKEN_KEY, ui.token.value.trim());
  else sessionStorage.removeItem(TOKEN_KEY);
}

// ---------------------------------------------------------------------------------------------
// Connection

let client: AgentClient | undefined;

function setState(state: string, label = state) {
  ui.state.dataset.state = state;
  ui.state.textContent = label;
  ui.send.disabled = !client;
}

function setStatus(text: string) {
  ui.status.textContent = text;
}

/** Starts a client for the current settings, dropping the previous one and its transcript. */
function connect() {
  client?.close();
  client = undefined;
  for (const view of answers.values()) view.fail(new Error("Disconnected"));
  answers.clear();
  ui.log.replaceChildren(ui.hint);
  ui.hint.hidden = false;
  const base = ui.url.value.trim();
  if (!base) {
    setState("closed", "no server");
    ui.hint.textContent =
      "Opened from a file: add ?url=wss://<project-ref>.supabase.co/functions/" +
      "v1/agent_websocket to the address, or fill in the server URL under Connection.";
    return;
  }
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    setState("closed", "bad URL");
    setStatus(`Not a URL: ${base}`);
    return;
  }
  const conversation = conversationName(ui.conversation.value);
  if (conversation) url.searchParams.set("conversation", conversation);
  const token = ui.token.value.trim();
  const c = new AgentClient(url.toString(), token ? { token } : {});
  client = c;
  const mine = <T>(fn: (e: T) => void) => (e: T) => c === client && fn(e);
  c.on(
    "open",
    mine(({ resumed, replayed }) => {
      setState("open", "connected");
      setStatus(resumed ? `Resumed the session (${replayed} frames caught up)` : "Connected");
    }),
  );
  c.on(
    "close",
    mine(({ code, reason, willReconnect }) => {
      if (willReconnect) setState("reconnecting", "reconnecting…");
      else {
        setState("closed", "disconnected");
        setStatus(`Disconnected (${code}${reason ? `: ${reason}` : ""})`);
      }
    }),
  );
  c.on(
    "reconnecting",
    mine(({ attempt, delayMs }) => {
      setState("reconnecting", "reconnecting…");
      setStatus(`Connection lost; attempt ${attempt} in ${(delayMs / 1000).toFixed(1)} s`);
    }),
  );
  c.on(
    "session",
    mine(({ lost }) => {
      if (!lost) return;
      ui.log.append(
        h(
          "div",
          { class: "divider", "data-role": "notice" },
          "new session: the server no longer had the old one",
        ),
      );
    }),
  );
  c.on(
    "notification",
    mine((f) => {
      if (f.event === "connected") {
        ui.agent.textContent = typeof f.agent === "string" ? f.agent : "agent_websocket";
        ui.model.textContent = typeof f.model === "string" ? f.model : "";
        ui.simulator.hidden = f.simulator !== true;
      } else if (f.event === "shutdown") setStatus("The server is restarting…");
      else if (f.event === "session_timeout") setStatus("Session closed after inactivity");
    }),
  );
  c.on(
    "status",
    mine((f) => {
      // Another tab or device of the conversation asked: its question and answer show here too.
      if (!answers.has(f.id) && !c.isOwnQuery(f.id) && typeof f.question === "string") {
        showTheirs(f.id, f.question, () => c.cancel(f.id));
      }
      answers.get(f.id)?.status(f);
    }),
  );
  c.on(
    "frame",
    mine((f) => {
      if (f.type === "tool_call") answers.get(f.id)?.toolCall(f);
      else if (f.type === "tool_result") answers.get(f.id)?.toolResult(f);
      else if (typeof f.id === "string" && theirs.has(f.id)) theirFrame(f);
    }),
  );
  c.on(
    "error",
    mine((err) => {
      if (err.id === undefined || !answers.has(err.id)) setStatus(`${err.code}: ${err.message}`);
    }),
  );
  setState("connecting", "connecting…");
  c.connect().catch(mine((err: unknown) => {
    setState("closed", "disconnected");
    setStatus(err instanceof Error ? err.message : String(err));
  }));
}

// ---------------------------------------------------------------------------------------------
// Answers

/** What an answer on screen needs of its query: its id, and a way to stop it. */
type Asked = { readonly id: string; cancel(): Promise<unknown> };

/** One answer on screen, fed by its `AskHandle` (or, for another tab's, by frames) and the frames that carry its id. */
class AnswerView {
  /** The whole message: tool calls, the answer, and its status line. */
  readonly el: HTMLElement;
  /** `data-role="answer"`: the answer's text and nothing else; `data-state` says where it is. */
  readonly #answer: HTMLElement;
  readonly #tools = h("div", { class: "tools" });
  readonly #meta = h("div", { class: "meta" }, "sending…");
  readonly #toolViews = new Map<string, HTMLElement>();

  constructor(readonly handle: Asked) {
    this.#answer = h("div", {
      class: "bubble",
      "data-role": "answer",
      "data-id": handle.id,
      "data-state": "streaming",
    });
    this.el = h("article", { class: "msg agent" }, this.#tools, this.#answer, this.#meta);
  }

  get running(): boolean {
    return this.#answer.dataset.state === "streaming";
  }

  append(delta: string) {
    if (this.#answer.textContent === "") {
      this.#meta.textContent = "writing…";
      setStatus("writing…");
    }
    this.#answer.append(delta);
  }

  status(f: StatusFrame) {
    if (!this.running) return;
    const text = f.state === "queued"
      ? `queued${f.position ? ` (position ${f.position})` : ""}`
      : f.state === "retrying"
      ? `retrying${f.delay_ms ? ` in ${(f.delay_ms / 1000).toFixed(1)} s` : ""}` +
        (f.attempt ? ` (attempt ${f.attempt})` : "")
      : f.state === "thinking"
      ? "thinking…"
      : f.state;
    this.#meta.textContent = text;
    setStatus(text);
  }

  toolCall(f: ToolCall) {
    const state = h("span", {}, f.needs_approval ? "waiting for your approval" : "running…");
    const card = h(
      "div",
      { class: "tool", "data-role": "tool", "data-tool-call-id": f.tool_call_id },
      h("div", { class: "tool-head" }, h("b", {}, f.tool), state),
      h("pre", {}, JSON.stringify(f.arguments, null, 2)),
    );
    if (f.needs_approval) {
      const decide = (approved: boolean) => {
        for (const b of actions.querySelectorAll("button")) b.disabled = true;
        state.textContent = approved ? "approved, running…" : "denied";
        try {
          client?.send({ type: "approval", id: f.id, tool_call_id: f.tool_call_id, approved });
        } catch (err) {
          state.textContent = `not sent: ${err instanceof Error ? err.message : err}`;
        }
      };
      const approve = h("button", { type: "button", "data-role": "approve" }, "Approve");
      const deny = h("button", { type: "button", class: "deny", "data-role": "deny" }, "Deny");
      approve.addEventListener("click", () => decide(true));
      deny.addEventListener("click", () => decide(false));
      const actions = h("div", { class: "tool-actions" }, approve, deny);
      card.append(actions);
    }
    this.#toolViews.set(f.tool_call_id, card);
    this.#tools.append(card);
    this.#meta.textContent = `calling ${f.tool}…`;
  }

  toolResult(f: ToolResult) {
    const card = this.#toolViews.get(f.tool_call_id);
    if (!card) return;
    card.dataset.state = f.ok ? "ok" : "failed";
    card.querySelector(".tool-actions")?.remove();
    const head = card.querySelector(".tool-head span");
    if (head) head.textContent = `${f.ok ? "done" : "failed"} in ${f.duration_ms} ms`;
    const body = f.ok ? JSON.stringify(f.result, null, 2) ?? "" : f.error ?? "failed";
    card.append(h("pre", {}, body.length > 4000 ? `${body.slice(0, 4000)}…` : body));
  }

  finish(
    r: Pick<
      Awaited<AskHandle["response"]>,
      "finish_reason" | "content" | "model" | "timing" | "usage"
    >,
  ) {
    const cancelled = r.finish_reason === "cancelled";
    this.#answer.dataset.state = cancelled ? "cancelled" : "done";
    this.#answer.dataset.finishReason = r.finish_reason ?? "";
    if (!this.#answer.textContent && r.content) this.#answer.textContent = r.content;
    const parts = [cancelled ? "stopped" : r.model ?? "done"];
    if (r.timing) parts.push(`${(r.timing.total_ms / 1000).toFixed(1)} s`);
    if (r.timing?.first_token_ms != null) parts.push(`first token ${r.timing.first_token_ms} ms`);
    if (r.usage) parts.push(`${r.usage.total_tokens} tokens`);
    if (typeof r.usage?.cost === "number") parts.push(`$${r.usage.cost}`);
    if (r.finish_reason && !["stop", "cancelled"].includes(r.finish_reason)) {
      parts.push(`finish: ${r.finish_reason}`);
    }
    this.#meta.textContent = parts.join(" · ");
    setStatus(cancelled ? "Stopped" : `Answered: ${parts.slice(1).join(" · ")}`);
  }

  fail(err: unknown) {
    if (!this.running) return;
    this.#answer.dataset.state = "error";
    const code = err instanceof AgentError ? err.code : "error";
    this.#answer.dataset.error = code;
    const message = err instanceof Error ? err.message : String(err);
    this.#meta.textContent = `${code}: ${message}`;
  }
}

const answers = new Map<string, AnswerView>();
/** Answers to what other sockets of the conversation asked, fed by their frames. */
const theirs = new Set<string>();

/** Shows a question another tab or device asked, and the answer to it as it streams. */
function showTheirs(id: string, question: string, cancel: () => Promise<unknown>) {
  const scroll = stickToBottom();
  ui.hint.hidden = true;
  ui.log.append(
    h(
      "article",
      { class: "msg user theirs", "data-role": "their-question" },
      h("div", { class: "bubble" }, question),
    ),
  );
  const view = new AnswerView({ id, cancel });
  answers.set(id, view);
  theirs.add(id);
  ui.log.append(view.el);
  scroll();
  updateCancel();
}

/** A frame of another socket's query: its text grows, then it ends. */
function theirFrame(f: ServerFrame) {
  const view = f.id === undefined ? undefined : answers.get(f.id);
  if (!view) return;
  const keep = stickToBottom();
  if (f.type === "response" && !f.done && typeof f.delta === "string") view.append(f.delta);
  else if (f.type === "response" && f.done) view.finish(f as Parameters<AnswerView["finish"]>[0]);
  else if (f.type === "error") {
    view.fail(new AgentError(f.code, f.message, { retryable: f.retryable, id: f.id }));
  }
  if ((f.type === "response" && f.done) || f.type === "error") {
    theirs.delete(f.id!);
    updateCancel();
  }
  keep();
}

function stickToBottom(): () => void {
  const s = ui.scroller;
  const atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 40;
  return () => {
    if (atBottom) s.scrollTop = s.scrollHeight;
  };
}

function updateCancel() {
  ui.cancel.disabled = ![...answers.values()].some((v) => v.running);
}

async function ask(content: string) {
  if (!client) return;
  const scroll = stickToBottom();
  ui.hint.hidden = true;
  ui.log.append(h("article", { class: "msg user" }, h("div", { class: "bubble" }, content)));
  const handle = client.ask(content);
  const view = new AnswerView(handle);
  answers.set(handle.id, view);
  ui.log.append(view.el);
  scroll();
  updateCancel();
  try {
    for await (const delta of handle.deltas) {
      const keep = stickToBottom();
      view.append(delta);
      keep();
    }
    view.finish(await handle.response);
  } catch (err) {
    view.fail(err);
    setStatus(err instanceof Error ? err.message : String(err));
  } finally {
    updateCancel();
    stickToBottom()();
  }
}

/** Stops the oldest running answer: the one streaming now (later ones are queued behind it). */
function cancelOldest() {
  const view = [...answers.values()].find((v) => v.running);
  if (!view) return;
  ui.cancel.disabled = true;
  setStatus("Stopping…");
  view.handle.cancel().catch((err) => setStatus(`Could not stop: ${err.message ?? err}`))
    .finally(updateCancel);
}

// ---------------------------------------------------------------------------------------------
// Wiring

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const content = ui.prompt.value.trim();
  if (!content) return;
  ui.prompt.value = "";
  ui.prompt.style.height = "";
  void ask(content);
});
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.prompt.addEventListener("input", () => {
  ui.prompt.style.height = "";
  ui.prompt.style.height = `${ui.prompt.scrollHeight + 2}px`;
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") cancelOldest();
});
ui.cancel.addEventListener("click", cancelOldest);
ui.connection.addEventListener("submit", (e) => {
  e.preventDefault();
  saveSettings();
  connect();
});

loadSettings();
connect();
ui.prompt.focus();
