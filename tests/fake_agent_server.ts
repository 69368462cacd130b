/**
 * A scripted stand-in for the agent server, for SDK tests of protocol v1.1 frames (tools,
 * approvals, reasoning) that the real server does not send yet. A real Deno.serve WebSocket on
 * loopback: it numbers frames, keeps them per session, and answers a resume with `resumed` and
 * the frames after `last_seq`, as the contract says. What happens inside a query is the test's
 * script: it sends frames with `session.send` and waits for the client's with `session.next`.
 *
 * @module
 */
import { deadline, type Frame } from "./helpers.ts";

/** One session of the fake server; it outlives its sockets, as the real one does. */
export interface FakeSession {
  readonly id: string;
  /** Every frame sent in this session, with its seq. */
  readonly sent: Frame[];
  /** Every frame the client sent in this session, from any socket. */
  readonly received: Frame[];
  /** Stamps `seq` and `timestamp`, keeps the frame for replay, and sends it if a socket is attached. */
  send(body: Frame): Frame;
  /** The next client frame (after those already taken by earlier calls) matching `pred`. */
  next(pred: (f: Frame) => boolean, what: string, ms?: number): Promise<Frame>;
  /** Closes the attached socket with `code` (default 1012 restart: the client resumes). */
  drop(code?: number, reason?: string): void;
  /** Resolves when a socket is attached again (after a resume). */
  attached(): Promise<void>;
}

/** A running fake server. */
export interface FakeAgentServer {
  url: string;
  sessions: FakeSession[];
  /** Subprotocols each connection offered, in order. */
  offered: string[][];
  close(): Promise<void>;
}

/** What the fake does with a query; runs concurrently with the session's other traffic. */
export type QueryScript = (query: Frame, session: FakeSession) => void | Promise<void>;

/**
 * Starts the fake. `connected` announces `features` (all of v1.1 by default); pings get pongs;
 * every query runs `script`.
 */
export function startFakeAgent(
  script: QueryScript,
  opts: { features?: string[]; onConnect?: (s: FakeSession, ws: WebSocket) => void } = {},
): FakeAgentServer {
  const sessions = new Map<string, Session>();
  const offered: string[][] = [];

  class Session implements FakeSession {
    readonly id = crypto.randomUUID();
    readonly sent: Frame[] = [];
    readonly received: Frame[] = [];
    ws?: WebSocket;
    #taken = new Set<number>();
    #waiters: (() => void)[] = [];

    send(body: Frame): Frame {
      const frame = { ...body, seq: this.sent.length + 1, timestamp: new Date().toISOString() };
      this.sent.push(frame);
      if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
      return frame;
    }

    next(pred: (f: Frame) => boolean, what: string, ms = 3000): Promise<Frame> {
      const find = () => {
        const i = this.received.findIndex((f, i) => !this.#taken.has(i) && pred(f));
        if (i < 0) return undefined;
        this.#taken.add(i);
        return this.received[i];
      };
      return deadline(
        new Promise<Frame>((resolve) => {
          const check = () => {
            const f = find();
            if (f) return resolve(f);
            this.#waiters.push(check);
          };
          check();
        }),
        ms,
        `client frame: ${what}`,
      );
    }

    drop(code = 1012, reason = "Restart") {
      this.ws?.close(code, reason);
      this.ws = undefined;
    }

    attached(): Promise<void> {
      return deadline(
        new Promise<void>((resolve) => {
          const check = () => this.ws ? resolve() : this.#waiters.push(check);
          check();
        }),
        3000,
        "the client to come back",
      );
    }

    wake() {
      for (const w of this.#waiters.splice(0)) w();
    }
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const protocols = (req.headers.get("sec-websocket-protocol") ?? "").split(",")
      .map((p) => p.trim()).filter(Boolean);
    offered.push(protocols);
    const { socket, response } = Deno.upgradeWebSocket(req, {
      protocol: protocols.includes("agent-websocket.v1") ? "agent-websocket.v1" : undefined,
    });
    const params = new URL(req.url).searchParams;
    socket.onopen = () => {
      let session = sessions.get(params.get("session_id") ?? "");
      if (session) {
        session.ws?.close(4002, "Session taken over");
        session.ws = socket;
        const lastSeq = Number(params.get("last_seq") ?? 0);
        const replay = session.sent.filter((f) => f.seq > lastSeq);
        socket.send(JSON.stringify({
          type: "notification",
          event: "resumed",
          session_id: session.id,
          replayed: replay.length,
          seq: 0,
          timestamp: new Date().toISOString(),
        }));
        for (const f of replay) socket.send(JSON.stringify(f));
      } else {
        session = new Session();
        sessions.set(session.id, session);
        session.ws = socket;
        session.send({
          type: "notification",
          event: "connected",
          session_id: session.id,
          protocol: 1,
          features: opts.features ?? ["tools", "client_tools", "approval", "reasoning"],
          limits: {},
          heartbeat_ms: 30_000,
        });
      }
      const s = session;
      opts.onConnect?.(s, socket);
      socket.onmessage = (e) => {
        const frame = JSON.parse(String(e.data));
        if (frame.type === "ping") {
          const pong = { type: "pong", id: frame.id, seq: 0, timestamp: new Date().toISOString() };
          return socket.send(JSON.stringify(pong));
        }
        s.received.push(frame);
        s.wake();
        if (frame.type === "query") {
          Promise.resolve().then(() => script(frame, s)).catch((e) =>
            console.error("fake agent script failed:", e)
          );
        }
      };
      socket.onclose = () => {
        if (s.ws === socket) s.ws = undefined;
      };
      s.wake();
    };
    return response;
  });

  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    get sessions() {
      return [...sessions.values()];
    },
    offered,
    async close() {
      for (const s of sessions.values()) s.ws?.close(1001, "Test over");
      await server.shutdown();
    },
  };
}

/** The frames that end a query with a final answer: a `thinking` status aside, as v1 sends them. */
export function answer(session: FakeSession, id: string, text: string, extra: Frame = {}): void {
  session.send({ type: "response", id, delta: text, done: false });
  session.send({
    type: "response",
    id,
    content: text,
    done: true,
    finish_reason: "stop",
    model: "fake/model",
    usage: null,
    timing: { first_token_ms: 1, total_ms: 2 },
    ...extra,
  });
}
