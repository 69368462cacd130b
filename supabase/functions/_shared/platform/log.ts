/**
 * Structured logging: one JSON object per line, so that Supabase's log
 * explorer (and `jq` locally) can filter by event, session or query.
 * Message text is never logged above debug level, and secrets never at all.
 *
 * @module
 */

/** Log levels, least to most severe. */
export type Level = "debug" | "info" | "warn" | "error";

const RANK: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Where log lines go; tests pass one that keeps them. */
export type LogSink = (line: string) => void;

/** A structured logger bound to a minimum level. */
export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
  /** Whether a level would be written; lets hot paths skip building fields. */
  enabled(level: Level): boolean;
}

/**
 * Creates a logger. Every string in `secrets` is replaced by `[redacted]` in
 * every line, as a last line of defence: the code never logs them on purpose.
 *
 * @example
 * ```ts
 * const log = createLogger("info", [Deno.env.get("OPENROUTER_API_KEY") ?? ""]);
 * log.info("server_started", { port: 8000 });
 * ```
 */
export function createLogger(
  level: Level,
  secrets: (string | undefined)[] = [],
  sink: LogSink = (line) => console.log(line),
): Logger {
  const min = RANK[level];
  const hidden = secrets.filter((s): s is string => typeof s === "string" && s.length >= 8);
  const write = (lvl: Level, event: string, fields?: Record<string, unknown>) => {
    if (RANK[lvl] < min) return;
    let line = JSON.stringify({ time: new Date().toISOString(), level: lvl, event, ...fields });
    for (const s of hidden) line = line.replaceAll(s, "[redacted]");
    sink(line);
  };
  return {
    debug: (e, f) => write("debug", e, f),
    info: (e, f) => write("info", e, f),
    warn: (e, f) => write("warn", e, f),
    error: (e, f) => write("error", e, f),
    enabled: (lvl) => RANK[lvl] >= min,
  };
}
