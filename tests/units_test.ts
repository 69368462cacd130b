import { assert, assertEquals } from "./assert.ts";
import { loadConfig } from "../supabase/functions/_shared/platform/config.ts";
import {
  fullJitterDelay,
  parseRetryAfter,
} from "../supabase/functions/_shared/platform/backoff.ts";
import { readSse } from "../supabase/functions/_shared/model/sse.ts";
import { trimHistory } from "../supabase/functions/_shared/store/store.ts";
import { parseDotEnv } from "../dev/dotenv.ts";

Deno.test("config: seed defaults hold when nothing is set", () => {
  const r = loadConfig({});
  assert(r.ok);
  const c = r.config;
  assertEquals(
    [c.model, c.agentName, c.sessionTimeoutMs, c.maxHistory, c.temperature, c.maxTokens],
    ["openai/gpt-4-turbo", "agent_websocket", 30 * 60_000, 50, 0.7, 1500],
  );
  assertEquals(c.apiKey, undefined);
  assertEquals(c.baseUrl, "https://openrouter.ai/api/v1");
  assertEquals(c.maxConnectionAgeMs, 0);
  assertEquals(c.auth, null, "auth is off under plain Deno by default");
  const edge = loadConfig({ SUPABASE_URL: "https://x.supabase.co" }, { edgeRuntime: true });
  assert(edge.ok && edge.config.maxConnectionAgeMs === 140_000);
  assertEquals(
    edge.config.auth?.issuer,
    "https://x.supabase.co/auth/v1",
    "auth is on under the edge runtime",
  );
  const noUrl = loadConfig({}, { edgeRuntime: true });
  assert(!noUrl.ok && noUrl.errors[0].includes("SUPABASE_URL"));
});

Deno.test("config: every invalid variable is reported at once", () => {
  const r = loadConfig({ TEMPERATURE: "hot", MAX_TOKENS: "-1", OPENROUTER_BASE_URL: "not a url" });
  assert(!r.ok);
  const text = r.errors.join("\n");
  for (const name of ["TEMPERATURE", "MAX_TOKENS", "OPENROUTER_BASE_URL"]) {
    assert(text.includes(name), `${name} missing from: ${text}`);
  }
});

Deno.test("config: lists are split, empty values mean unset, allowed models include MODEL", () => {
  const r = loadConfig({ MODEL: "a/b", FALLBACK_MODELS: " c/d , e/f,", MAX_HISTORY: "" });
  assert(r.ok);
  assertEquals(r.config.fallbackModels, ["c/d", "e/f"]);
  assertEquals(r.config.allowedModels, ["a/b", "c/d", "e/f"]);
  assertEquals(r.config.maxHistory, 50);
});

Deno.test("backoff: full jitter stays under the exponential ceiling and the cap", () => {
  assertEquals(fullJitterDelay(0, 500, 8000, () => 0.999), 499);
  assertEquals(fullJitterDelay(3, 500, 8000, () => 0.5), 2000);
  assertEquals(fullJitterDelay(10, 500, 8000, () => 0.999), 7992);
  assertEquals(fullJitterDelay(2, 500, 8000, () => 0), 0);
});

Deno.test("backoff: Retry-After as seconds or an HTTP date", () => {
  assertEquals(parseRetryAfter("3"), 3000);
  assertEquals(parseRetryAfter(null), undefined);
  assertEquals(parseRetryAfter("soon"), undefined);
  const now = Date.parse("2026-01-01T00:00:00Z");
  assertEquals(parseRetryAfter("Thu, 01 Jan 2026 00:00:05 GMT", now), 5000);
});

Deno.test("sse: events split across chunks, CRLF, comments and a missing final blank line", async () => {
  const parts = [": OPENROUTER PROCESSING\r\n\r\nda", 'ta: {"a":1}\r', "\n\r\ndata: tail"];
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      for (const p of parts) c.enqueue(new TextEncoder().encode(p));
      c.close();
    },
  });
  const got = [];
  for await (const m of readSse(body)) got.push(m);
  assertEquals(got, [
    { kind: "comment", text: "OPENROUTER PROCESSING" },
    { kind: "data", data: '{"a":1}' },
    { kind: "data", data: "tail" },
  ]);
});

Deno.test("history: trimmed by count and by characters, never starting with an answer", () => {
  const m = (role: "user" | "assistant", content: string) => ({ role, content });
  const history = [m("user", "q1"), m("assistant", "a1"), m("user", "q2"), m("assistant", "a2")];
  assertEquals(trimHistory(history, 3, 1000), [m("user", "q2"), m("assistant", "a2")]);
  assertEquals(trimHistory(history, 10, 5), [m("user", "q2"), m("assistant", "a2")]);
  assertEquals(trimHistory(history, 10, 1000), history);
});

Deno.test("dotenv: comments, quotes and export prefixes", () => {
  assertEquals(
    parseDotEnv("# c\nexport A=1\nB=\"two words\"\nC=three # note\n\nBAD\nD='x=y'\n"),
    { A: "1", B: "two words", C: "three", D: "x=y" },
  );
});

Deno.test(".env.example lists every variable the server reads, with valid defaults", async () => {
  const { EnvSchema } = await import("../supabase/functions/_shared/platform/config.ts");
  const example = parseDotEnv(await Deno.readTextFile(new URL("../.env.example", import.meta.url)));
  assertEquals(Object.keys(example).sort(), Object.keys(EnvSchema.shape).sort());
  const r = loadConfig(example);
  assert(r.ok, r.ok ? "" : r.errors.join("; "));
});

Deno.test("the function's deno.json pins exactly what import_map.json pins for it", async () => {
  const read = async (path: string) =>
    JSON.parse(await Deno.readTextFile(new URL(path, import.meta.url))).imports as Record<
      string,
      string
    >;
  const deployed = await read("../supabase/functions/agent_websocket/deno.json");
  const local = await read("../import_map.json");
  for (const [name, spec] of Object.entries(deployed)) {
    assertEquals(spec, local[name], `${name}: deploy and local runs use one version`);
  }
  // Every package the function's code imports is declared for the deploy.
  const bare = new Set<string>();
  for (const dir of ["../supabase/functions/_shared/", "../supabase/functions/agent_websocket/"]) {
    for await (const f of walk(new URL(dir, import.meta.url))) {
      const text = await Deno.readTextFile(f);
      for (const m of text.matchAll(/^import[^"']*["']([^."'][^"']*)["']/gm)) {
        if (!m[1].startsWith("node:")) bare.add(m[1]);
      }
    }
  }
  for (const name of bare) assert(name in deployed, `${name} is in the function's deno.json`);
});

async function* walk(dir: URL): AsyncGenerator<URL> {
  for await (const e of Deno.readDir(dir)) {
    const url = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
    if (e.isDirectory) yield* walk(url);
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) yield url;
  }
}
