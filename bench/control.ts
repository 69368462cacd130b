/**
 * The child side of the bench's control channel. A server the bench starts in
 * its own process (gateway, bare echo, stand-in) prints one JSON line when it
 * listens, then answers one JSON line per request line read on stdin:
 *
 *     stdin:  {"id":3,"cmd":"mem"}
 *     stdout: {"id":3,"ok":true,"result":{...}}
 *
 * The process ends when stdin closes (the bench exited or crashed), on the
 * `quit` command, or after `maxSeconds` — it never outlives a run. Anything
 * else a server prints must go to stderr.
 *
 * @module
 */

/** A command handler; its result is sent back as `result`. */
export type Handler = (args: Record<string, unknown>) => unknown | Promise<unknown>;

/** Options for {@linkcode serveControl}. */
export interface ControlOptions {
  /** Sent first, as the ready line. */
  ready: Record<string, unknown>;
  handlers: Record<string, Handler>;
  /** Runs once before the process exits (close the server, flush a profile). */
  onQuit?: () => Promise<void> | void;
  /** Hard limit on the process's life. */
  maxSeconds: number;
}

const encoder = new TextEncoder();

function writeLine(value: unknown): void {
  const bytes = encoder.encode(JSON.stringify(value) + "\n");
  let written = 0;
  while (written < bytes.length) written += Deno.stdout.writeSync(bytes.subarray(written));
}

/** Memory after a full collection (run the process with `--v8-flags=--expose-gc`). */
export function memoryAfterGc(): Deno.MemoryUsage {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    gc();
  }
  return Deno.memoryUsage();
}

/**
 * Prints the ready line and serves commands until stdin closes.
 *
 * @example
 * ```ts
 * await serveControl({ ready: { port: 8000 }, handlers: { ping: () => "pong" }, maxSeconds: 60 });
 * ```
 */
export async function serveControl(opts: ControlOptions): Promise<void> {
  let quitting = false;
  const quit = async (code: number) => {
    if (quitting) return;
    quitting = true;
    try {
      // A server that will not close in time must not keep the process alive.
      await Promise.race([
        opts.onQuit?.(),
        new Promise((resolve) => Deno.unrefTimer(setTimeout(resolve, 5000))),
      ]);
    } finally {
      Deno.exit(code);
    }
  };
  const lifetime = setTimeout(() => {
    console.error(`control: ${opts.maxSeconds} s limit reached; exiting`);
    quit(3);
  }, opts.maxSeconds * 1000);
  Deno.unrefTimer(lifetime);

  writeLine({ ready: true, pid: Deno.pid, ...opts.ready });
  const handlers: Record<string, Handler> = {
    mem: (args) => (args.gc === false ? Deno.memoryUsage() : memoryAfterGc()),
    ...opts.handlers,
  };
  let buffered = "";
  const decoder = new TextDecoder();
  for await (const chunk of Deno.stdin.readable) {
    buffered += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line === "") continue;
      const req = JSON.parse(line) as { id: number; cmd: string; args?: Record<string, unknown> };
      if (req.cmd === "quit") {
        writeLine({ id: req.id, ok: true, result: null });
        return quit(0);
      }
      const handler = handlers[req.cmd];
      try {
        if (!handler) throw new Error(`unknown command ${req.cmd}`);
        writeLine({ id: req.id, ok: true, result: await handler(req.args ?? {}) });
      } catch (err) {
        writeLine({ id: req.id, ok: false, error: String(err) });
      }
    }
  }
  await quit(0);
}
