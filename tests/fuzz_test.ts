/**
 * Fuzz test: thousands of generated bad frames over several concurrent
 * sockets, while a well-behaved session keeps asking questions.
 *
 * Every generated frame is bad on purpose (a valid frame such as
 * `{"type":"ping"}` is never generated as a bad one), and the generator knows
 * the error code each must get. Each burst of bad frames is followed by a
 * `ping` with a unique id, so the test checks an exact account per socket:
 * between two pongs, exactly one `error` per bad frame, with the expected code,
 * and nothing else.
 *
 * Environment:
 * - `FUZZ_SEED=<uint32>` replays a run (the seed is printed on every run);
 * - `FUZZ_FRAMES=<n>` sets how many bad frames are sent in all (default 3000).
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import {
  assertGapless,
  collectGarbage,
  eventually,
  isTerminal,
  startStack,
  TestClient,
} from "./helpers.ts";
import { defaultReply } from "../dev/openrouter_simulator.ts";
import { unstorableText } from "../supabase/functions/_shared/protocol/frames.ts";

const FRAMES = Number(Deno.env.get("FUZZ_FRAMES") ?? "3000");
const SEED = Deno.env.get("FUZZ_SEED") !== undefined
  ? Number(Deno.env.get("FUZZ_SEED")) >>> 0
  : crypto.getRandomValues(new Uint32Array(1))[0];
/** Concurrent fuzzing sockets. */
const SOCKETS = 8;
/**
 * The default frame limit: big enough that 10k-deep nested objects
 * (`{"":{"":…}}`, 5 bytes a level) fit under it and reach the parser.
 */
const MAX_BYTES = 65_536;
const MAX_CONTENT = 4_000;
/** Frames over this are not answered: the socket is closed with 1009. */
const HARD_MAX_BYTES = 4 * MAX_BYTES;
const MODEL = "openai/gpt-4-turbo";
const COMMANDS = ["cancel", "reset", "history", "stats"];
const HEAP_SLACK = 30 * 1024 * 1024;

/** A bad frame and the error code it must get. */
interface Case {
  kind: string;
  data: string | Uint8Array;
  code: string;
}

/** What a fuzzing socket must receive, in order, after `connected`. */
type Expected = { type: "error"; code: string; kind: string; preview: string } | {
  type: "pong";
  id: string;
};

/** A small seeded generator (a Weyl sequence through a 32-bit mixer). */
class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x9e3779b9) >>> 0;
    let z = this.#state;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return ((z ^ (z >>> 15)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** A string of random UTF-16 units: ASCII, controls, NUL, accents, CJK, lone surrogates. */
  text(maxLen: number): string {
    const len = this.int(maxLen + 1);
    let s = "";
    for (let i = 0; i < len; i++) {
      const r = this.next();
      const unit = r < 0.5
        ? 0x20 + this.int(0x5f)
        : r < 0.6
        ? this.int(0x20)
        : r < 0.75
        ? 0x80 + this.int(0x780)
        : r < 0.85
        ? 0x4e00 + this.int(0x1000)
        : r < 0.95
        ? 0xd800 + this.int(0x800) // surrogates, mostly unpaired
        : 0xfff0 + this.int(0x10);
      s += String.fromCharCode(unit);
    }
    return s;
  }
  /** A non-empty string that is not a known command name. */
  unknownName(maxLen: number): string {
    for (;;) {
      const s = this.text(maxLen);
      if (s.length > 0 && !COMMANDS.includes(s)) return s;
    }
  }
}

const json = (v: unknown) => JSON.stringify(v);
const utf8 = new TextEncoder();
const bytes = (s: string) => utf8.encode(s).length;

// Values of the wrong type for a field, by what the field accepts.
const NOT_STRING: unknown[] = [null, true, false, 0, -1, 1.5, 1e308, [], ["x"], {}, { a: 1 }];
const NOT_BOOL: unknown[] = [null, 0, 1, "true", "false", "", [], {}, [true], { v: true }];
const NOT_STRING_OR_NUMBER: unknown[] = [null, true, false, [], [1], {}, { t: 1 }];
const NOT_RECORD: unknown[] = [null, true, 0, 7.5, "x", "", [], [1, 2], [{}]];
const BLANK = ["", " ", "\n\t ", "\u00a0", "\u3000", "\ufeff", " ".repeat(300)];
const TYPE_NAMES = ["query", "command", "feedback", "ping"];
const PROTO_NAMES = ["__proto__", "constructor", "prototype", "toString", "hasOwnProperty"];

function badString(rng: Rng, maxLen: number): unknown {
  return rng.chance(0.2) ? (rng.chance(0.5) ? "" : "i".repeat(maxLen + 1 + rng.int(40))) : rng.pick(
    NOT_STRING,
  );
}

/** A valid id, sometimes with odd characters. */
function goodId(rng: Rng): string {
  const id = rng.chance(0.3) ? rng.pick(PROTO_NAMES) : `q-${rng.int(1e9)}${rng.text(6)}`;
  return id.length > 128 ? id.slice(0, 128) : id;
}

/** A frame string of exactly `total` UTF-8 bytes: `head`, filler, `tail`. */
function sized(head: string, tail: string, total: number, fill: string): string {
  const fixed = bytes(head) + bytes(tail);
  const per = bytes(fill);
  const n = Math.floor((total - fixed) / per);
  const pad = "a".repeat(total - fixed - n * per);
  const s = head + pad + fill.repeat(n) + tail;
  assertEquals(bytes(s), total, "sized() arithmetic");
  return s;
}

function nestedArrays(depth: number, inner = ""): string {
  return "[".repeat(depth) + inner + "]".repeat(depth);
}

function nestedObjects(depth: number, key = ""): string {
  return `{${json(key)}:`.repeat(depth) + "1" + "}".repeat(depth);
}

/** Bad queries: every field of the wrong type, blank or long content, disallowed models. */
function badQuery(rng: Rng): Case {
  const base: Record<string, unknown> = { type: "query", content: `hello ${rng.int(1000)}` };
  if (rng.chance(0.5)) base.id = goodId(rng);
  switch (rng.int(9)) {
    case 0:
      if (rng.chance(0.3)) delete base.content;
      else base.content = rng.pick(NOT_STRING);
      return { kind: "query.content wrong type", data: json(base), code: "content_required" };
    case 1:
      base.content = rng.pick(BLANK);
      return { kind: "query.content blank", data: json(base), code: "content_required" };
    case 2:
      base.content = "x".repeat(MAX_CONTENT + 1 + rng.int(500));
      return { kind: "query.content too long", data: json(base), code: "message_too_large" };
    case 3:
      base.id = badString(rng, 128);
      return { kind: "query.id bad", data: json(base), code: "invalid_message" };
    case 4:
      base.model = badString(rng, 200);
      return { kind: "query.model bad", data: json(base), code: "invalid_message" };
    case 5: {
      const model = rng.pick([...PROTO_NAMES, "OPENAI/GPT-4-TURBO", `${MODEL} `, rng.text(30)]);
      if (model.length === 0 || model === MODEL) return badQuery(rng);
      base.model = model;
      return { kind: "query.model not allowed", data: json(base), code: "model_not_allowed" };
    }
    case 6:
      base.stream = rng.pick(NOT_BOOL);
      return { kind: "query.stream wrong type", data: json(base), code: "invalid_message" };
    case 7:
      if (rng.chance(0.2)) {
        // 1e999 parses to Infinity, which is not a valid number.
        return {
          kind: "query.timestamp infinite",
          data: json(base).slice(0, -1) + ',"timestamp":-1e999}',
          code: "invalid_message",
        };
      }
      base.timestamp = rng.pick(NOT_STRING_OR_NUMBER);
      return { kind: "query.timestamp wrong type", data: json(base), code: "invalid_message" };
    default:
      base.metadata = rng.pick(NOT_RECORD);
      return { kind: "query.metadata wrong type", data: json(base), code: "invalid_message" };
  }
}

/** Frames without a type: the older `{content}` shape, broken. */
function badLegacy(rng: Rng): Case {
  switch (rng.int(3)) {
    case 0:
      return {
        kind: "legacy content wrong type",
        data: json({ content: rng.pick(NOT_STRING) }),
        code: "invalid_message",
      };
    case 1:
      return {
        kind: "legacy content blank",
        data: json({ content: rng.pick(BLANK) }),
        code: "content_required",
      };
    default:
      return {
        kind: "legacy content too long",
        data: json({ content: "y".repeat(MAX_CONTENT + 1) }),
        code: "message_too_large",
      };
  }
}

/** Bad commands: bad names, unknown names, bad ids and args, cancel of nothing. */
function badCommand(rng: Rng): Case {
  const base: Record<string, unknown> = { type: "command", name: rng.pick(COMMANDS) };
  if (rng.chance(0.5)) base.id = goodId(rng);
  switch (rng.int(6)) {
    case 0:
      if (rng.chance(0.3)) delete base.name;
      else base.name = badString(rng, 64);
      return { kind: "command.name bad", data: json(base), code: "invalid_message" };
    case 1:
      base.name = rng.pick([
        ...PROTO_NAMES,
        "CANCEL",
        "Stats",
        "stats\u0000",
        "\ud800",
        "reset ",
        " history",
        "help",
        rng.unknownName(64),
      ]);
      if (rng.chance(0.3)) {
        base.args = {
          id: rng.text(10),
          [rng.pick(PROTO_NAMES)]: rng.pick([{ x: 1 }, null, "x", 1]),
        };
      }
      return { kind: "command.name unknown", data: json(base), code: "unknown_command" };
    case 2:
      base.id = badString(rng, 128);
      return { kind: "command.id bad", data: json(base), code: "invalid_message" };
    case 3:
      base.args = rng.pick(NOT_RECORD);
      return { kind: "command.args wrong type", data: json(base), code: "invalid_message" };
    case 4: {
      // Nothing runs on a fuzzing socket, so every cancel names nothing.
      base.name = "cancel";
      const args = rng.pick<unknown>([
        undefined,
        {},
        { id: goodId(rng) },
        { id: 42 },
        { id: null },
        { extra: [1, 2, 3] },
      ]);
      if (args !== undefined) base.args = args;
      return { kind: "command cancel of nothing", data: json(base), code: "not_found" };
    }
    default:
      // `__proto__` as an own JSON key inside args.
      return {
        kind: "command.args __proto__",
        data: `{"type":"command","name":"cancel","args":{"__proto__":{"id":"zz","polluted":true}}}`,
        code: "not_found",
      };
  }
}

/** Bad feedback: bad or unknown ids, bad ratings and comments. */
function badFeedback(rng: Rng): Case {
  const base: Record<string, unknown> = {
    type: "feedback",
    id: goodId(rng),
    rating: rng.pick(["up", "down"]),
  };
  if (rng.chance(0.3)) base.comment = rng.text(40);
  switch (rng.int(4)) {
    case 0:
      if (rng.chance(0.3)) delete base.id;
      else base.id = badString(rng, 128);
      return { kind: "feedback.id bad", data: json(base), code: "invalid_message" };
    case 1:
      if (rng.chance(0.2)) delete base.rating;
      else base.rating = rng.pick([null, 1, true, "", "UP", "Down", "meh", ["up"], { up: 1 }]);
      return { kind: "feedback.rating bad", data: json(base), code: "invalid_message" };
    case 2:
      base.comment = rng.chance(0.3) ? "c".repeat(4001 + rng.int(100)) : rng.pick(NOT_STRING);
      return { kind: "feedback.comment bad", data: json(base), code: "invalid_message" };
    default:
      // Well-formed, but no response with that id exists on this socket.
      return { kind: "feedback unknown id", data: json(base), code: "not_found" };
  }
}

/** Bad answers to tool calls: broken shapes, and well-formed ones nothing waits for. */
function badToolAnswer(rng: Rng): Case {
  const approval = rng.chance(0.5);
  const base: Record<string, unknown> = approval
    ? { type: "approval", id: goodId(rng), tool_call_id: goodId(rng), approved: rng.chance(0.5) }
    : { type: "tool_result", id: goodId(rng), tool_call_id: goodId(rng), result: rng.text(20) };
  switch (rng.int(4)) {
    case 0:
      base[rng.pick(["id", "tool_call_id"])] = rng.chance(0.3) ? undefined : badString(rng, 128);
      return { kind: `${base.type} ids bad`, data: json(base), code: "invalid_message" };
    case 1:
      if (approval) base.approved = rng.pick([null, 1, "yes", [], {}]);
      else base.error = rng.pick([1, true, [], {}, "e".repeat(4001)]);
      return { kind: `${base.type} body bad`, data: json(base), code: "invalid_message" };
    case 2:
      if (approval) base.reason = rng.pick([1, [], "r".repeat(1001)]);
      else base.error = rng.pick([null, 0]);
      return { kind: `${base.type} extra bad`, data: json(base), code: "invalid_message" };
    default:
      // Well-formed, but no call of this session waits for it.
      return { kind: `${base.type} unknown call`, data: json(base), code: "not_found" };
  }
}

/** Queries declaring bad client tools: refused before they cost anything. */
function badQueryTools(rng: Rng): Case {
  const tool = (): unknown =>
    rng.pick<unknown>([
      null,
      "get_weather",
      {},
      { name: "" },
      { name: "a b" },
      { name: "x".repeat(65) },
      { name: "ok", parameters: { type: "array" } },
      { name: "ok", parameters: [] },
      { name: "ok", description: 7 },
      { name: "ok", needs_approval: "yes" },
    ]);
  const tools = rng.chance(0.2)
    ? rng.pick<unknown>(["tools", 1, {}, null])
    : rng.chance(0.2)
    ? [{ name: "dup" }, { name: "dup" }]
    : Array.from({ length: 1 + rng.int(3) }, tool);
  return {
    kind: "query.tools bad",
    data: json({ type: "query", id: goodId(rng), content: "use a tool", tools }),
    code: "invalid_message",
  };
}

function badPing(rng: Rng): Case {
  return {
    kind: "ping.id bad",
    data: json({ type: "ping", id: badString(rng, 128) }),
    code: "invalid_message",
  };
}

/** Unknown or missing types, and JSON that is not an object. */
function badType(rng: Rng): Case {
  if (rng.chance(0.3)) {
    return {
      kind: "not an object",
      data: json(
        rng.pick<unknown>([null, 0, -3.5, true, false, "ping", "", [], [{ type: "ping" }]]),
      ),
      code: "invalid_message",
    };
  }
  const type = rng.pick<unknown>([
    null,
    1,
    true,
    [],
    {},
    ["ping"],
    "",
    "Query",
    "PING",
    "pong",
    "error",
    "response",
    "status",
    "notification",
    "ping ",
    "quer",
    ...PROTO_NAMES,
    rng.text(12),
  ]);
  if (typeof type === "string" && TYPE_NAMES.includes(type)) return badType(rng);
  const frame: Record<string, unknown> = { type, id: "t1", content: "hello", name: "stats" };
  if (rng.chance(0.2)) delete frame.type; // no type and no string content
  if (frame.type === undefined) delete frame.content;
  return { kind: "unknown type", data: json(frame), code: "invalid_message" };
}

/** Text that is not JSON: truncated frames, random units, near-misses. */
function badJson(rng: Rng): Case {
  const r = rng.int(3);
  if (r === 0) {
    const whole = json({ type: "query", id: goodId(rng), content: rng.text(30), stream: true });
    // Every strict prefix of an object is invalid JSON.
    return { kind: "truncated", data: whole.slice(0, rng.int(whole.length)), code: "invalid_json" };
  }
  if (r === 1) {
    const text = rng.text(80);
    // What the server receives: lone surrogates become U+FFFD on the wire.
    const wire = new TextDecoder().decode(utf8.encode(text));
    let parsed: unknown;
    try {
      parsed = JSON.parse(wire);
    } catch {
      return { kind: "random text", data: text, code: "invalid_json" };
    }
    if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
      return badJson(rng); // a valid object by chance; not our business here
    }
    return { kind: "random text (valid JSON, not an object)", data: text, code: "invalid_message" };
  }
  const data = rng.pick([
    "",
    " ",
    "{",
    "}",
    "[",
    "{'type':'ping'}",
    '{"type":"ping",}',
    '{"type":"ping"} trailing',
    '{"type":"ping"}{"type":"ping"}',
    '{type:"ping"}',
    '{"type":"ping" /* comment */}',
    "NaN",
    "undefined",
    "\ufeff" + '{"type":"ping"}',
    '{"type":"ping","id":"\u0000"}', // a raw NUL inside a string
    '{"type":"ping"}\u0000',
    '{"type":"pi\nng"}',
    '{"type":"ping","id":"\\x41"}',
    '{"type":"ping","id":"\\ud8"}',
    '{"type":"ping","id":01}',
  ]);
  return { kind: "near-miss JSON", data, code: "invalid_json" };
}

/** Frames around MAX_MESSAGE_BYTES: just under (and still bad) and just over. */
function huge(rng: Rng): Case {
  const fill = rng.pick(["x", "é", "€", "😀"]);
  switch (rng.int(5)) {
    case 0: {
      // Over the limit by a little or a lot; it would be a valid ping if it were smaller.
      const total = rng.chance(0.7) ? MAX_BYTES + 1 + rng.int(4) : MAX_BYTES * 2 + rng.int(1000);
      return {
        kind: `over limit (${fill})`,
        data: sized('{"type":"ping","pad":"', '"}', total, fill),
        code: "message_too_large",
      };
    }
    case 1: {
      // Fewer UTF-16 units than the limit, more UTF-8 bytes.
      const total = MAX_BYTES + 1 + rng.int(3);
      return {
        kind: "over limit in bytes only",
        data: sized('{"type":"query","content":"', '"}', total, rng.pick(["é", "€"])),
        code: "message_too_large",
      };
    }
    case 2:
      // Exactly at the limit, so it is parsed: an id far too long.
      return {
        kind: `at limit, id too long (${fill})`,
        data: sized('{"type":"ping","id":"', '"}', MAX_BYTES - rng.int(3), fill),
        code: "invalid_message",
      };
    case 3:
      return {
        kind: `at limit, content too long (${fill})`,
        data: sized('{"type":"query","content":"', '"}', MAX_BYTES - rng.int(3), fill),
        code: "message_too_large",
      };
    default:
      return {
        kind: "binary over limit",
        data: new Uint8Array(MAX_BYTES + 1 + rng.int(100)).fill(0x7b),
        code: "unsupported_frame",
      };
  }
}

/** 10k-deep (and deeper) nested arrays and objects, under the frame limit. */
function deep(rng: Rng): Case {
  const depth = rng.chance(0.5) ? 10_000 : rng.range(1_000, 30_000);
  switch (rng.int(6)) {
    case 0:
      return { kind: "deep array", data: nestedArrays(depth), code: "invalid_message" };
    case 1:
      return {
        kind: "deep array as content",
        data: `{"type":"query","content":${nestedArrays(depth)}}`,
        code: "content_required",
      };
    case 2:
      return {
        kind: "deep object as ping id",
        data: `{"type":"ping","id":${nestedObjects(Math.min(depth, 12_000))}}`,
        code: "invalid_message",
      };
    case 3:
      return {
        kind: "deep __proto__ objects as metadata",
        data: `{"type":"query","content":"x","stream":"no","metadata":${
          nestedObjects(Math.min(depth, 4_000), "__proto__")
        }}`,
        code: "invalid_message",
      };
    case 4:
      return { kind: "deep unclosed", data: "[".repeat(depth), code: "invalid_json" };
    default:
      return {
        kind: "deep args of unknown command",
        data: `{"type":"command","name":"nope","args":{"a":${nestedArrays(depth)}}}`,
        code: "unknown_command",
      };
  }
}

/** Keys and values that try to reach Object.prototype. */
function proto(rng: Rng): Case {
  return rng.pick<Case>([
    { kind: "__proto__ type", data: '{"__proto__":{"type":"ping"}}', code: "invalid_message" },
    {
      kind: "__proto__ beside a bad field",
      data: '{"type":"ping","id":7,"__proto__":{"polluted":true}}',
      code: "invalid_message",
    },
    {
      kind: "constructor.prototype",
      data: '{"type":"nope","constructor":{"prototype":{"polluted":true}}}',
      code: "invalid_message",
    },
    {
      kind: "__proto__ in query",
      data: '{"type":"query","content":"x","__proto__":{"polluted":true},"model":7}',
      code: "invalid_message",
    },
    {
      kind: "__proto__ in metadata",
      data: '{"type":"query","content":"x","stream":1,"metadata":{"__proto__":{"polluted":1}}}',
      code: "invalid_message",
    },
    {
      kind: "__proto__ as model",
      data: '{"type":"query","content":"x","id":"__proto__","model":"__proto__"}',
      code: "model_not_allowed",
    },
    {
      kind: "feedback on __proto__",
      data: '{"type":"feedback","id":"__proto__","rating":"up"}',
      code: "not_found",
    },
    {
      kind: "constructor: null in metadata",
      data: '{"type":"query","content":"x","stream":"no","metadata":{"constructor":null}}',
      code: "invalid_message",
    },
    {
      kind: "constructor: null in args",
      data: '{"type":"command","name":"nope","args":{"constructor":null}}',
      code: "unknown_command",
    },
    {
      kind: "command constructor",
      data: '{"type":"command","name":"constructor","args":{"prototype":{"polluted":1}}}',
      code: "unknown_command",
    },
    {
      kind: "prototype type",
      data: '{"type":"prototype","__proto__":null}',
      code: "invalid_message",
    },
  ]);
}

/** NUL characters and lone surrogates, escaped (refused as `invalid_message`, see `unstorable`) and raw. */
function oddChars(rng: Rng): Case {
  const odd = rng.pick(["\u0000", "\ud800", "\udfff", "\ud800\u0000", "\udbff\udbff"]);
  return rng.pick<Case>([
    {
      kind: "odd command name",
      data: json({ type: "command", name: odd }),
      code: "unknown_command",
    },
    {
      kind: "odd command name + suffix",
      data: json({ type: "command", name: `stats${odd}` }),
      code: "unknown_command",
    },
    { kind: "odd type", data: json({ type: odd }), code: "invalid_message" },
    { kind: "odd type suffix", data: json({ type: `ping${odd}` }), code: "invalid_message" },
    {
      kind: "odd feedback id",
      data: json({ type: "feedback", id: odd, rating: "down" }),
      code: "not_found",
    },
    {
      kind: "odd model",
      data: json({ type: "query", content: odd, model: odd }),
      code: "model_not_allowed",
    },
    {
      kind: "odd content, bad stream",
      data: json({ type: "query", content: odd, stream: odd }),
      code: "invalid_message",
    },
    {
      // Raw (unescaped) lone surrogates become U+FFFD when the client encodes them.
      kind: "raw odd command name",
      data: `{"type":"command","name":"${odd.replaceAll("\u0000", "")}x"}`,
      code: "unknown_command",
    },
  ]);
}

function binary(rng: Rng): Case {
  const data = rng.chance(0.3)
    ? utf8.encode(json({ type: "ping", id: "as-binary" }))
    : Uint8Array.from({ length: rng.int(200) }, () => rng.int(256));
  return { kind: "binary", data, code: "unsupported_frame" };
}

const GENERATORS: [number, (rng: Rng) => Case][] = [
  [14, badQuery],
  [3, badLegacy],
  [10, badCommand],
  [8, badFeedback],
  [3, badPing],
  [6, badToolAnswer],
  [4, badQueryTools],
  [8, badType],
  [10, badJson],
  [4, huge],
  [3, deep],
  [5, proto],
  [6, oddChars],
  [4, binary],
];
const TOTAL_WEIGHT = GENERATORS.reduce((n, [w]) => n + w, 0);

function generate(rng: Rng): Case {
  let r = rng.int(TOTAL_WEIGHT);
  for (const [w, gen] of GENERATORS) {
    if (r < w) return gen(rng);
    r -= w;
  }
  throw new Error("unreachable");
}

/**
 * Whether the server refuses a frame for U+0000 or a lone surrogate, which it
 * checks right after parsing the JSON, before anything else about the frame.
 * A raw lone surrogate becomes U+FFFD on the way (UTF-8), so it does not count.
 */
function unstorable(data: string | Uint8Array): boolean {
  if (typeof data !== "string" || bytes(data) > MAX_BYTES) return false;
  let value: unknown;
  try {
    value = JSON.parse(data.toWellFormed());
  } catch {
    return false;
  }
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    unstorableText(value) !== null;
}

function preview(data: string | Uint8Array): string {
  if (typeof data !== "string") return `<binary ${data.length} bytes>`;
  return data.length > 120 ? `${json(data.slice(0, 100))}… (${data.length} units)` : json(data);
}

/**
 * One fuzzing socket: sends `count` bad frames in bursts, each burst followed
 * by a ping, and returns what it must have received.
 */
async function fuzzSocket(
  client: TestClient,
  socket: number,
  count: number,
): Promise<{ expected: Expected[]; kinds: Map<string, number> }> {
  const rng = new Rng(SEED ^ Math.imul(socket + 1, 0x27d4eb2d));
  const expected: Expected[] = [];
  const kinds = new Map<string, number>();
  let sent = 0;
  let burst = 0;
  while (sent < count) {
    // Mostly one bad frame per ping; sometimes a few; now and then a flood.
    const size = Math.min(
      count - sent,
      rng.chance(0.75) ? 1 : rng.chance(0.85) ? rng.range(2, 10) : rng.range(50, 150),
    );
    for (let i = 0; i < size; i++) {
      const c = generate(rng);
      client.send(c.data);
      const code = unstorable(c.data) ? "invalid_message" : c.code;
      expected.push({ type: "error", code, kind: c.kind, preview: preview(c.data) });
      kinds.set(c.kind, (kinds.get(c.kind) ?? 0) + 1);
    }
    sent += size;
    const id = `fuzz-${socket}-${burst++}`;
    client.send({ type: "ping", id });
    expected.push({ type: "pong", id });
    // Waiting for each pong keeps the sockets interleaved and lets other sessions run.
    await client.waitFor((f) => f.type === "pong" && f.id === id, `pong ${id}`, 10_000);
  }
  return { expected, kinds };
}

/** Compares what a fuzzing socket got with what it must have got, naming the first mismatch. */
function checkAccount(client: TestClient, socket: number, expected: Expected[]): void {
  const got = client.frames.slice(1);
  assertEquals(client.frames[0]?.event, "connected", `socket ${socket}: first frame`);
  for (let i = 0; i < Math.max(got.length, expected.length); i++) {
    const g = got[i];
    const e = expected[i];
    const ok = e && g && g.type === e.type &&
      (e.type === "pong" ? g.id === e.id : g.code === e.code && g.retryable === false &&
        typeof g.message === "string");
    if (!ok) {
      throw new Error(
        `socket ${socket}, answer #${i} (seed ${SEED}): expected ${
          e
            ? (e.type === "pong" ? `pong ${e.id}` : `error ${e.code} for ${e.kind}: ${e.preview}`)
            : "nothing"
        }; got ${g ? json(g).slice(0, 400) : "nothing"}`,
      );
    }
  }
  assertGapless(client.frames);
  assertEquals(client.garbage.length, 0, `socket ${socket}: non-JSON frames`);
}

Deno.test("fuzz: every bad frame gets exactly one error, sockets stay open, answers keep flowing", async () => {
  console.log(
    `fuzz seed ${SEED} (reproduce with FUZZ_SEED=${SEED}), ${FRAMES} bad frames over ${SOCKETS} sockets`,
  );
  const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort();
  const stack = await startStack({
    MAX_MESSAGE_BYTES: String(MAX_BYTES),
    MAX_CONTENT_CHARS: String(MAX_CONTENT),
    HARD_MAX_MESSAGE_BYTES: String(HARD_MAX_BYTES),
    RESUME_WINDOW_SECONDS: "0",
    LOG_LEVEL: "info",
    MODEL,
  });
  const clients: TestClient[] = [];
  try {
    // Warm up (module code, schemas, JIT) before the baseline.
    const warm = await TestClient.open(stack.wsUrl);
    await warm.client.terminal(warm.client.query("warm up"));
    await warm.client.close();
    await eventually(() => stack.server.app.sessions.size === 0, "warm-up session freed");
    const gc = collectGarbage();
    const baseline = Deno.memoryUsage();

    // The well-behaved session asks one question after another until the fuzzing ends.
    const { client: good } = await TestClient.open(stack.wsUrl);
    clients.push(good);
    let fuzzing = true;
    const answered: { id: string; question: string; during: boolean }[] = [];
    const goodLoop = (async () => {
      for (let n = 0; fuzzing || n < 2; n++) {
        const question = `question ${n} while fuzzing`;
        const id = good.query(question);
        const terminal = await good.terminal(id, 10_000);
        assertEquals(terminal.type, "response", `good session: terminal of ${question}`);
        assertEquals(terminal.content, defaultReply(question).join(""));
        answered.push({ id, question, during: fuzzing });
      }
    })().then(() => null, (err: unknown) => err);

    const sockets = await Promise.all(
      Array.from({ length: SOCKETS }, () => TestClient.open(stack.wsUrl)),
    );
    clients.push(...sockets.map((s) => s.client));
    const started = performance.now();
    const perSocket = Math.ceil(FRAMES / SOCKETS);
    let results: Awaited<ReturnType<typeof fuzzSocket>>[] | undefined;
    try {
      results = await Promise.all(
        sockets.map(({ client }, i) => fuzzSocket(client, i, perSocket)),
      );
    } finally {
      fuzzing = false;
    }
    const fuzzMs = Math.round(performance.now() - started);
    const goodFailure = await goodLoop;
    if (goodFailure) throw goodFailure;

    // Exact accounting, and every socket is still open.
    sockets.forEach(({ client }, i) => {
      checkAccount(client, i, results![i].expected);
      assertEquals(client.closeEvent, null, `socket ${i} was closed`);
      assertEquals(client.ws.readyState, WebSocket.OPEN);
    });
    const kinds = new Map<string, number>();
    for (const r of results) for (const [k, n] of r.kinds) kinds.set(k, (kinds.get(k) ?? 0) + n);
    const sent = [...kinds.values()].reduce((a, b) => a + b, 0);
    assert(sent >= FRAMES, `sent ${sent} bad frames`);
    console.log(`sent ${sent} bad frames of ${kinds.size} kinds in ${fuzzMs} ms`);

    // Past the hard cap there is no error frame: that socket alone is closed with 1009.
    const { client: huge } = await TestClient.open(stack.wsUrl);
    clients.push(huge);
    huge.send(`{"type":"ping","pad":"${"p".repeat(HARD_MAX_BYTES)}"}`);
    assertEquals((await huge.closed).code, 1009, "close code past the hard cap");
    assertEquals(huge.frames.length, 1, "only `connected` before the close");
    assertEquals(good.closeEvent, null, "the good session is still open");
    assertEquals((await good.terminal(good.query("still there?"), 5000)).type, "response");

    // The good session: every answer complete, exactly one terminal each, nothing else wrong.
    assert(
      answered.filter((a) => a.during).length >= 2,
      `answers completed while the fuzzing ran: ${answered.filter((a) => a.during).length}`,
    );
    for (const { id } of answered) {
      const frames = good.framesOf(id);
      assertEquals(frames.filter(isTerminal).length, 1, `one terminal for ${id}`);
      const final = frames.find(isTerminal)!;
      const deltas = frames.filter((f) => f.delta !== undefined).map((f) => f.delta).join("");
      assertEquals(deltas, final.content, "deltas add up to the answer");
    }
    assertEquals(good.frames.filter((f) => f.type === "error").length, 0, "good session errors");
    assertGapless(good.frames);
    // Bad frames never cost an upstream call: one request per good question, plus the
    // warm-up and "still there?".
    assertEquals(stack.sim.requests.length, answered.length + 2, "upstream requests");

    // No prototype was polluted; nothing crashed on the server side.
    assertEquals(Object.getOwnPropertyNames(Object.prototype).sort(), protoBefore);
    assertEquals(({} as Record<string, unknown>).polluted, undefined);
    assertEquals(Object.getPrototypeOf({}), Object.prototype);
    const crashes = stack.logs.filter((l) => JSON.parse(l).level === "error");
    assertEquals(crashes, [], "error-level server log lines");

    // Close everything; the sessions are freed and memory goes back near where it was.
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await eventually(() => stack.server.app.sessions.size === 0, "every session freed", 5000);
    results = undefined;
    sockets.length = 0;
    collectGarbage();
    const after = Deno.memoryUsage();
    const mb = (n: number) => `${(n / 1048576).toFixed(1)} MB`;
    console.log(
      `heapUsed ${mb(baseline.heapUsed)} -> ${mb(after.heapUsed)}, rss ${mb(baseline.rss)} -> ${
        mb(after.rss)
      }${gc ? " (after forced GC)" : " (no forced GC available)"}`,
    );
    assert(
      after.heapUsed < baseline.heapUsed + HEAP_SLACK,
      `heapUsed grew from ${mb(baseline.heapUsed)} to ${mb(after.heapUsed)}`,
    );

    // The server is still up and knows of no session.
    const res = await fetch(`${stack.server.url}/health`);
    assertEquals(res.status, 200);
    const health = await res.json();
    assertEquals([health.status, health.sessions, health.in_flight], ["ok", 0, 0]);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await stack.close();
  }
});

/**
 * `args` and `metadata` are plain objects with any keys: `constructor` once
 * tripped zod's plain-object check, so that a null value crashed the parser
 * (`internal_error`) and any other value refused a valid frame.
 */
Deno.test("a constructor key inside metadata or args is handled like any other key", async () => {
  const stack = await startStack({ LOG_LEVEL: "info" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    for (const value of ["null", '"x"', "{}"]) {
      const id = client.query("hi", { metadata: JSON.parse(`{"constructor":${value}}`) });
      assertEquals((await client.terminal(id)).type, "response", `metadata constructor ${value}`);
      client.send(`{"type":"command","name":"stats","id":"s","args":{"constructor":${value}}}`);
      const answer = await client.next((f) => f.event === "stats" || f.type === "error", "stats");
      assertEquals(answer.event, "stats", `args constructor ${value}: ${JSON.stringify(answer)}`);
    }
    assertEquals(stack.logs.filter((l) => JSON.parse(l).level === "error"), []);
    await client.close();
  } finally {
    await stack.close();
  }
});
