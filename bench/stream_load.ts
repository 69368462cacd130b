/**
 * Background streams: `count` clients, each asking one question after another
 * and reading every streamed token, so that `count` answers are in flight at
 * any moment. Starts are spread over one answer's length (a burst of
 * simultaneous starts would measure the clients' own event loop). Frames are
 * classified by substring, not parsed: the client must stay cheap so that the
 * servers, not the load generator, are what is measured.
 *
 * @module
 */
import type { Target } from "./target.ts";
import { closeSockets, openSockets, sleep } from "./sockets.ts";

/** A running background load. */
export class StreamLoad {
  /** Delta frames received so far (one per relayed token unless coalesced). */
  deltas = 0;
  answers = 0;
  errors = 0;
  /** The first error frames, for the report. */
  errorSamples: string[] = [];
  #sockets: WebSocket[] = [];
  #busy: boolean[] = [];
  #stopping = false;

  private constructor(readonly target: Target, readonly count: number) {}

  /**
   * Connects `count` clients and starts their question loops; resolves once
   * every client has sent its first question (after one answer's length).
   */
  static async start(target: Target, count: number, answerMs: number): Promise<StreamLoad> {
    const load = new StreamLoad(target, count);
    load.#sockets = await openSockets(count, (i) => target.socketUrl(i), {
      firstFrame: target.greets,
      concurrency: 50,
    });
    load.#busy = new Array(count).fill(false);
    load.#sockets.forEach((ws, i) => load.#drive(ws, i));
    const spread = Math.max(1, answerMs);
    load.#sockets.forEach((_, i) => {
      setTimeout(() => load.#ask(i), Math.random() * spread);
    });
    await sleep(spread + 50);
    return load;
  }

  #nextId = 0;

  #ask(i: number): void {
    if (this.#stopping) return;
    const ws = this.#sockets[i];
    if (ws.readyState !== WebSocket.OPEN) return;
    this.#busy[i] = true;
    ws.send(
      `{"type":"query","id":"bg-${i}-${this.#nextId++}","content":"A background question"}`,
    );
  }

  #drive(ws: WebSocket, i: number): void {
    ws.addEventListener("message", (e) => {
      const data = e.data as string;
      if (data.includes('"done":false')) {
        this.deltas++;
      } else if (data.includes('"done":true')) {
        this.answers++;
        this.#busy[i] = false;
        this.#ask(i);
      } else if (data.startsWith('{"type":"error"') && data.includes('"id":"bg-')) {
        this.errors++;
        if (this.errorSamples.length < 5) this.errorSamples.push(data.slice(0, 300));
        this.#busy[i] = false;
        this.#ask(i);
      }
    });
    ws.addEventListener("close", () => {
      if (!this.#stopping) {
        this.errors++;
        if (this.errorSamples.length < 5) this.errorSamples.push(`client ${i} closed early`);
      }
      this.#busy[i] = false;
    });
  }

  /** Stops asking, lets answers in flight finish (at most `graceMs`), closes every socket. */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    const until = performance.now() + graceMs;
    while (this.#busy.some((b) => b) && performance.now() < until) await sleep(20);
    await closeSockets(this.#sockets);
  }
}
