/**
 * Wire protocol v1: zod schemas for every client frame, TypeScript types for
 * every server frame, and the one parser the handler uses. See
 * `docs/protocol.md` for the user-facing description.
 *
 * @module
 */
import { z } from "zod";
import type { ErrorCode } from "./codes.ts";
import type { ErrorBody } from "./wire.ts";

export { ERROR_CODES, type ErrorCode, PROTOCOL_VERSION, SUBPROTOCOL } from "./codes.ts";

/**
 * The subprotocols a client offered in its handshake.
 *
 * @example
 * ```ts
 * import { offeredSubprotocols, SUBPROTOCOL } from "./frames.ts";
 * const req = new Request("http://h/", { headers: { "sec-websocket-protocol": SUBPROTOCOL } });
 * offeredSubprotocols(req).includes(SUBPROTOCOL); // true
 * ```
 */
export function offeredSubprotocols(req: Request): string[] {
  return (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
}

const id = z.string().min(1).max(128);

/**
 * A JSON object with any keys. Not `z.record`: zod's plain-object check reads
 * `value.constructor`, so a client's `{"constructor": null}` made it throw
 * and `{"constructor": "x"}` made it refuse a valid frame.
 */
export const JsonObject = z.custom<Record<string, unknown>>(
  (v) => typeof v === "object" && v !== null && !Array.isArray(v),
  "Expected an object",
);

/** A tool name as the model APIs accept it. */
export const ToolName = z.string().regex(
  /^[A-Za-z0-9_-]{1,64}$/,
  "1-64 letters, digits, _ or -",
);

/** A client tool declared with a query; the client runs it and answers with `tool_result`. */
export const ClientToolDeclaration = z.object({
  name: ToolName,
  description: z.string().max(2000).optional(),
  parameters: JsonObject.refine(
    (p) => p.type === undefined || p.type === "object",
    "parameters must be a JSON Schema object (type: object)",
  ).refine((p) => JSON.stringify(p).length <= 16_000, "parameters is too large").optional(),
  needs_approval: z.boolean().optional(),
});

/** A question for the agent. */
export const QueryFrame = z.object({
  type: z.literal("query"),
  id: id.optional(),
  content: z.string(),
  model: z.string().min(1).max(200).optional(),
  stream: z.boolean().optional(),
  timestamp: z.union([z.string(), z.number()]).optional(),
  metadata: JsonObject.optional(),
  tools: z.array(ClientToolDeclaration).max(64).optional(),
});

/** The v1 command names. */
export const COMMAND_NAMES = ["cancel", "reset", "history", "stats"] as const;

/** A control command; unknown names are answered with `unknown_command`. */
export const CommandFrame = z.object({
  type: z.literal("command"),
  name: z.string().min(1).max(64),
  id: id.optional(),
  args: JsonObject.optional(),
});

/** Human feedback on a response. */
export const FeedbackFrame = z.object({
  type: z.literal("feedback"),
  id,
  rating: z.enum(["up", "down"]),
  comment: z.string().max(4000).optional(),
});

/** An application-level ping (browsers cannot send protocol pings). */
export const PingFrame = z.object({
  type: z.literal("ping"),
  id: id.optional(),
});

/** The answer to a client tool call. */
export const ToolResultFrame = z.object({
  type: z.literal("tool_result"),
  id,
  tool_call_id: id,
  result: z.unknown().optional(),
  error: z.string().max(4000).optional(),
});

/** A human's decision on a tool call that needs approval. */
export const ApprovalFrame = z.object({
  type: z.literal("approval"),
  id,
  tool_call_id: id,
  approved: z.boolean(),
  reason: z.string().max(1000).optional(),
});

/** Any frame a client may send. */
export const ClientFrame = z.discriminatedUnion("type", [
  QueryFrame,
  CommandFrame,
  FeedbackFrame,
  PingFrame,
  ToolResultFrame,
  ApprovalFrame,
]);

/** The frame types a client may send. */
const CLIENT_TYPES = ["query", "command", "feedback", "ping", "tool_result", "approval"];

/** Parsed client frame. */
export type ClientFrame = z.infer<typeof ClientFrame>;
/** Parsed query frame. */
export type QueryFrame = z.infer<typeof QueryFrame>;
/** Parsed feedback frame. */
export type FeedbackFrame = z.infer<typeof FeedbackFrame>;
/** Parsed command frame. */
export type CommandFrame = z.infer<typeof CommandFrame>;
/** Parsed tool result frame. */
export type ToolResultFrame = z.infer<typeof ToolResultFrame>;
/** Parsed approval frame. */
export type ApprovalFrame = z.infer<typeof ApprovalFrame>;
/** A parsed client tool declaration. */
export type ClientToolDeclaration = z.infer<typeof ClientToolDeclaration>;

/** What {@linkcode parseClientFrame} returns. */
export type ParseResult =
  | { ok: true; frame: ClientFrame }
  | { ok: false; error: ErrorBody };

function invalid(
  code: ErrorCode,
  message: string,
  extra: Partial<ErrorBody> = {},
): ParseResult {
  return { ok: false, error: { type: "error", code, message, retryable: false, ...extra } };
}

/** A string id the client gave, so that even a rejected frame's error can name it. */
function clientId(value: Record<string, unknown>): string | undefined {
  const v = value.id;
  return typeof v === "string" && v.length > 0 && v.length <= 128 && isStorableText(v)
    ? v
    : undefined;
}

const encoder = new TextEncoder();

/**
 * The UTF-8 size of a text (a frame, a bus message), or 0 when it cannot
 * exceed `limit` bytes: a UTF-16 unit is at most 3 bytes of UTF-8, so short
 * texts skip encoding.
 *
 * @example
 * ```ts
 * import { frameBytes } from "./frames.ts";
 * frameBytes("héllo", 100); // 0: five units are at most 15 bytes
 * frameBytes("héllo", 10); // 6
 * ```
 */
export function frameBytes(data: string, limit: number): number {
  return data.length * 3 > limit ? encoder.encode(data).length : 0;
}

/**
 * Whether a string can be stored: Postgres `text` and `jsonb` refuse U+0000,
 * and an unpaired surrogate has no UTF-8 form. One such string used to fail
 * the shared write of every session on a process.
 *
 * @example
 * ```ts
 * isStorableText("héllo 👋"); // true
 * isStorableText("a\u0000b"); // false
 * isStorableText("\ud800"); // false
 * ```
 */
export function isStorableText(s: string): boolean {
  return s.isWellFormed() && !s.includes("\0");
}

const UNSTORABLE = "must not contain U+0000 or an unpaired surrogate";

/**
 * The path of the first string in `value` (a key or a value, at any depth)
 * that {@linkcode isStorableText} refuses, with what is wrong; null when all
 * can be stored. The path never repeats the refused text. `nul: false` skips
 * the U+0000 search when the caller knows there can be none.
 *
 * @example
 * ```ts
 * unstorableText({ metadata: { tags: ["ok", "\u0000"] } });
 * // { path: "metadata.tags.1", message: "Text must not contain U+0000 or an unpaired surrogate" }
 * ```
 */
export function unstorableText(
  value: unknown,
  opts: { nul?: boolean } = {},
): { path: string; message: string } | null {
  const nul = opts.nul ?? true;
  const ok = (s: string) => s.isWellFormed() && !(nul && s.includes("\0"));
  // Iterative: deeply nested metadata must not overflow the stack.
  const stack: [unknown, string][] = [[value, ""]];
  const join = (path: string, key: string) => (path ? `${path}.${key}` : key).slice(0, 200);
  while (stack.length > 0) {
    const [v, path] = stack.pop()!;
    if (typeof v === "string") {
      if (!ok(v)) return { path, message: `Text ${UNSTORABLE}` };
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], join(path, String(i))]);
    } else if (typeof v === "object" && v !== null) {
      const entries = Object.entries(v);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [key, child] = entries[i];
        if (!ok(key)) return { path, message: `A key ${UNSTORABLE}` };
        stack.push([child, join(path, key)]);
      }
    }
  }
  return null;
}

/**
 * Finds text a frame may not carry, cheaply. In JSON, U+0000 and unpaired
 * surrogates can only come as `\u` escapes (JSON refuses raw control
 * characters, and a WebSocket text frame is valid UTF-8), so a frame without a
 * backslash-u skips the walk. Searching for the backslash is fast; searching a
 * two-byte string for U+0000 is not (V8 finds a zero byte in every ASCII
 * character), so that search runs only when the frame has a `\u0000`.
 */
function unstorableInFrame(text: string, value: unknown) {
  if (!text.includes("\\u") && text.isWellFormed()) return null;
  return unstorableText(value, { nul: text.includes("\\u0000") });
}

/**
 * The query shapes other clients send: `{content}` with no type (the older
 * client), `{message}` (the tool-event guide) and `{type: "chat", message}`
 * (the Python framework). All three are queries.
 */
function asQuery(obj: Record<string, unknown>): Record<string, unknown> {
  if (obj.type === undefined && typeof obj.content === "string") return { ...obj, type: "query" };
  if (
    (obj.type === undefined || obj.type === "chat") && obj.content === undefined &&
    typeof obj.message === "string"
  ) {
    const { message, ...rest } = obj;
    return { ...rest, type: "query", content: message };
  }
  return obj;
}

/**
 * Parses one text frame from a client. Never throws: every bad input becomes
 * an error body the handler can send back.
 *
 * @example
 * ```ts
 * const r = parseClientFrame('{"type":"query","content":"hi"}', 32000);
 * if (r.ok && r.frame.type === "query") console.log(r.frame.content);
 * ```
 */
export function parseClientFrame(text: string, maxContentChars: number): ParseResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return invalid("invalid_json", "Frame is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return invalid("invalid_message", "Frame must be a JSON object");
  }
  const obj = value as Record<string, unknown>;
  const bad = unstorableInFrame(text, obj);
  if (bad) {
    // Refused, not replaced: a silently changed id or text would surprise more.
    return invalid("invalid_message", "Frame contains U+0000 or an unpaired surrogate", {
      id: clientId(obj),
      issues: [bad],
    });
  }
  const candidate = asQuery(obj);
  let parsed: ReturnType<typeof ClientFrame.safeParse>;
  try {
    parsed = ClientFrame.safeParse(candidate);
  } catch {
    // A parser bug must not become a crash for a client's frame.
    return invalid("invalid_message", "Frame could not be parsed", { id: clientId(obj) });
  }
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 10).map((i) => ({
      path: i.path.map(String).join("."),
      message: i.message,
    }));
    if (candidate.type === "query" && typeof candidate.content !== "string") {
      return invalid("content_required", "Message content is required", {
        id: clientId(obj),
        issues,
      });
    }
    const known = typeof candidate.type === "string" &&
      CLIENT_TYPES.includes(candidate.type);
    return invalid(
      "invalid_message",
      known ? `Invalid ${candidate.type} frame` : "Unknown or missing frame type",
      { id: clientId(obj), issues },
    );
  }
  const frame = parsed.data;
  if (frame.type === "query") {
    if (frame.content.trim().length === 0) {
      return invalid("content_required", "Message content is required", { id: frame.id });
    }
    if (frame.content.length > maxContentChars) {
      return invalid(
        "message_too_large",
        `Message content is longer than ${maxContentChars} characters`,
        { id: frame.id },
      );
    }
  }
  return { ok: true, frame };
}
