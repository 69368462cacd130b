/**
 * The bench side of its child processes: start one, wait for its ready line,
 * send it control commands (see `control.ts`), and stop it by its own pid.
 * A child that dies or never gets ready fails the run with the tail of its
 * stderr, so a broken harness is loud.
 *
 * @module
 */

/** How to start a child. */
export interface ChildSpec {
  /** Used in error messages. */
  name: string;
  command: string;
  args: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** How long the ready line may take. */
  readyTimeoutMs?: number;
}

type Reply = { id: number; ok: boolean; result?: unknown; error?: string };

/** Every child still running, so that an interrupted bench can stop them. */
const running = new Set<Child>();

/** Stops every child this process started (used on errors and Ctrl-C). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((c) => c.stop()));
}

/** A running child process with a line-based control channel. */
export class Child {
  readonly #process: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #waiting = new Map<number, (r: Reply) => void>();
  #nextId = 1;
  #stderr: string[] = [];
  #exited = false;
  readonly status: Promise<Deno.CommandStatus>;
  /** The ready line. */
  ready: Record<string, unknown> = {};

  private constructor(readonly spec: ChildSpec) {
    this.#process = new Deno.Command(spec.command, {
      args: spec.args,
      env: spec.env,
      cwd: spec.cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#process.stdin.getWriter();
    this.status = this.#process.status.then((s) => {
      this.#exited = true;
      running.delete(this);
      for (const resolve of this.#waiting.values()) {
        resolve({ id: -1, ok: false, error: `${spec.name} exited (${s.code})` });
      }
      this.#waiting.clear();
      return s;
    });
    running.add(this);
    this.#pumpStderr();
  }

  get pid(): number {
    return this.#process.pid;
  }

  get exited(): boolean {
    return this.#exited;
  }

  /** The last lines the child wrote to stderr. */
  stderrTail(lines = 20): string {
    return this.#stderr.slice(-lines).join("\n");
  }

  async #pumpStderr(): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of this.#process.stderr) {
      partial += decoder.decode(chunk, { stream: true });
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      this.#stderr.push(...lines);
      if (this.#stderr.length > 200) this.#stderr.splice(0, this.#stderr.length - 200);
      if (Deno.env.get("BENCH_VERBOSE")) {
        for (const l of lines) console.error(`[${this.spec.name}] ${l}`);
      }
    }
  }

  /** Starts a child and resolves once it printed its ready line. */
  static async start(spec: ChildSpec): Promise<Child> {
    const child = new Child(spec);
    const lines = child.#lines();
    const timeoutMs = spec.readyTimeoutMs ?? 30_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // The ready line is the first JSON object line; tools may print other lines first.
    const readyLine = async (): Promise<Record<string, unknown> | null> => {
      for (;;) {
        const next = await lines.next();
        if (next.done) return null;
        try {
          const value = JSON.parse(next.value);
          if (value && typeof value === "object") return value;
        } catch {
          child.#stderr.push(next.value);
        }
      }
    };
    const first = await Promise.race([
      readyLine(),
      new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), timeoutMs)),
      child.status.then(() => "exited" as const),
    ]);
    clearTimeout(timer);
    if (first === "timeout" || first === "exited" || first === null) {
      const why = first === "timeout" ? `not ready after ${timeoutMs} ms` : "exited before ready";
      await child.stop();
      throw new Error(`${spec.name}: ${why}\n${child.stderrTail()}`);
    }
    child.ready = first;
    child.#readReplies(lines);
    return child;
  }

  async *#lines(): AsyncGenerator<string> {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of this.#process.stdout) {
      partial += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = partial.indexOf("\n")) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (line.trim() !== "") yield line;
      }
    }
  }

  async #readReplies(lines: AsyncGenerator<string>): Promise<void> {
    for await (const line of lines) {
      let reply: Reply;
      try {
        reply = JSON.parse(line);
      } catch {
        continue; // Not ours: a child may print other lines (the peer's start script does).
      }
      this.#waiting.get(reply.id)?.(reply);
      this.#waiting.delete(reply.id);
    }
  }

  /** Sends a control command and resolves with its result. */
  async request<T = unknown>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    if (this.#exited) throw new Error(`${this.spec.name} is not running\n${this.stderrTail()}`);
    const id = this.#nextId++;
    const reply = new Promise<Reply>((resolve) => this.#waiting.set(id, resolve));
    await this.#writer.write(new TextEncoder().encode(JSON.stringify({ id, cmd, args }) + "\n"));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([
      reply,
      new Promise<Reply>((resolve) =>
        timer = setTimeout(() => resolve({ id, ok: false, error: "no reply in 60 s" }), 60_000)
      ),
    ]);
    clearTimeout(timer);
    if (!r.ok) throw new Error(`${this.spec.name} ${cmd}: ${r.error}\n${this.stderrTail()}`);
    return r.result as T;
  }

  /**
   * Stops the child: closes its stdin (it exits by itself), then SIGTERM after
   * 6 s and SIGKILL after 3 more. Only this child's own pid is signalled.
   */
  async stop(): Promise<void> {
    if (this.#exited) return;
    await this.#writer.close().catch(() => {});
    const wait = async (ms: number) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.status, new Promise((r) => timer = setTimeout(r, ms))]);
      clearTimeout(timer);
      return this.#exited;
    };
    if (await wait(6000)) return;
    try {
      this.#process.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    if (await wait(3000)) return;
    try {
      this.#process.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.status;
  }
}
