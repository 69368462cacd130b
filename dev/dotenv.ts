/**
 * A minimal `.env` reader for `deno task dev` (Deno's `--env-file` fails when
 * the file is missing, and a newcomer has none).
 *
 * @module
 */

/**
 * Reads `KEY=value` lines; `#` comments, blank lines, `export ` prefixes and
 * single or double quotes are handled. A missing file yields `{}`.
 *
 * @example
 * ```ts
 * const env = { ...loadDotEnv(".env"), ...Deno.env.toObject() };
 * ```
 */
export function loadDotEnv(path: string): Record<string, string> {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return {};
  }
  return parseDotEnv(text);
}

/**
 * Parses the text of a `.env` file.
 *
 * @example
 * ```ts
 * parseDotEnv("MODEL=openai/gpt-4o\n# comment\n"); // { MODEL: "openai/gpt-4o" }
 * ```
 */
export function parseDotEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim().replace(/^export\s+/, "");
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    const key = line.slice(0, eq).trim();
    let value = line.slice(eq + 1).trim();
    const quoted = /^(["'])(.*)\1$/.exec(value);
    if (quoted) value = quoted[2];
    else value = value.replace(/\s+#.*$/, "");
    out[key] = value;
  }
  return out;
}
