/**
 * A chaos harness for the durable, cross-process path: N real server
 * processes sharing sessions through Postgres (each behind its own TCP proxy,
 * so one can be cut off from the database), the OpenRouter simulator streaming
 * answers long enough to be cut mid-way, and M raw-WebSocket clients that ask
 * questions and reconnect with `session_id` + `last_seq` to any process at any
 * point. Every frame of every socket goes through one {@linkcode Checker},
 * which holds the client's view of each session and checks the protocol's
 * promises on it:
 *
 * - (a) exactly one terminal per accepted query (`response` done, or `error`
 *   with the query's id): none at the end is a hanging query, two a doubled one;
 * - (b) `seq` gapless and never repeated over all the sockets of a session
 *   (seq 0 frames are per socket; after `resumed` a socket goes on at
 *   last_seq + 1);
 * - (c) the deltas of an answer add up to its final content, resumes included,
 *   and the content is what the model said;
 * - (d) `interrupted` only after a SIGKILL of a process the session was on,
 *   never after a SIGTERM, a database cut or a plain reconnect.
 *
 * Faults are recorded with the time they happened; each outcome and each
 * broken invariant is put down to the last fault that touched its session, so
 * the report says which kind of event breaks what.
 *
 * @module
 */
import { DATABASE_URL } from "./db.ts";
import { deadline, TEST_API_KEY } from "./helpers.ts";
import { type ServerProcess, startServerProcess } from "./process.ts";
import { startTcpProxy, type TcpProxy } from "./tcp_proxy.ts";
import { type Simulator, startSimulator } from "../dev/openrouter_simulator.ts";

/** A frame as received. */
// deno-lint-ignore no-explicit-any
export type Frame = Record<string, any>;

/** The kinds of forced event. */
export type FaultKind =
  /** The client drops its socket and resumes on a random process (maybe the same). */
  | "reconnect"
  /** The client resumes on another live process while its old socket is still open. */
  | "switch"
  /** SIGKILL of a process (a crash, the CPU limit); a fresh one replaces it. */
  | "kill"
  /** SIGTERM of a process (a planned stop); a fresh one replaces it. */
  | "term"
  /** Every database connection of one process is cut once. */
  | "db_cut"
  /** One process cannot reach the database for 1–3 s (connections cut and refused). */
  | "partition";

/** Every fault kind, in report order. */
export const FAULT_KINDS: readonly FaultKind[] = [
  "reconnect",
  "switch",
  "kill",
  "term",
  "db_cut",
  "partition",
];

/** A forced event, as it happened. */
export interface FaultEvent {
  n: number;
  kind: FaultKind;
  /** ms since the checker started. */
  at: number;
  process?: string;
  client?: string;
}

/** Which promise broke. */
export type Invariant =
  | "a:hanging"
  | "a:doubled"
  | "a:after_terminal"
  | "a:unanswered_frame"
  | "b:gap"
  | "b:repeat"
  | "b:resume_refused"
  | "c:deltas"
  | "c:content"
  | "d:interrupted"
  | "protocol"
  | "process_crashed"
  | "client_stuck";

/** One broken promise, with the frames that show it. */
export interface Violation {
  invariant: Invariant;
  /** The last fault that touched the session before it was seen ("none" if none did). */
  fault: FaultKind | "none";
  client?: string;
  session?: string;
  query?: string;
  detail: string;
  frames: Frame[];
  /** The faults that touched the query or session, oldest first. */
  faults: FaultEvent[];
  /** Server log lines about the session around `wall` (filled in by the cluster at the end). */
  logs?: string[];
  /** When it was seen (ms since the epoch), to find the server log lines around it. */
  wall: number;
}

/**
 * Counts for one fault kind. A query counts in the row of every kind of fault
 * that touched it while it was open (its process was hit, or its client moved),
 * so rows overlap and the total counts each query once; a doubled terminal
 * counts under the faults between the query and its second terminal; gaps,
 * repeats and refused resumes count under the last fault that touched the
 * session before they were seen.
 */
export interface Row {
  /** Forced events of this kind. */
  events: number;
  queries: number;
  answered: number;
  interrupted: number;
  /** Other error terminals (e.g. `draining`, `rate_limited`): answered with a refusal. */
  refused: number;
  lost: number;
  doubled: number;
  hanging: number;
  /** Sent, no frame ever came, and the socket went away within 2 s: never accepted. */
  unacked: number;
  gaps: number;
  repeats: number;
  resume_gap: number;
  not_found: number;
}

/** What a run found. */
export interface Report {
  rows: Record<FaultKind | "none", Row>;
  total: Row;
  violations: Violation[];
  /** Log events of the servers worth knowing (adoptions, store outages, crashes). */
  serverEvents: Record<string, number>;
  /** Error terminals other than `interrupted`, by code. */
  refusedCodes: Record<string, number>;
  /** A few server log lines worth reading (failed adoptions, refused resumes, uncaught errors). */
  notable: string[];
  durationMs: number;
}

interface QueryTrack {
  id: string;
  client: string;
  session: SessionTrack;
  socket: SocketTrack;
  process: string;
  sentAt: number;
  expected: string;
  stream: boolean;
  accepted: boolean;
  deltas: string;
  deltaCount: number;
  terminals: Frame[];
  recent: Frame[];
  faults: FaultEvent[];
  lost: boolean;
  /** For a doubled query: the kinds of fault that touched its session between send and the second terminal. */
  doubledBy?: FaultKind[];
}

interface SessionTrack {
  id: string;
  client: string;
  lastSeq: number;
  /** The last frames of the client's view, for failure messages. */
  recent: Frame[];
  /** Every process a socket of this session was on. */
  processes: Set<string>;
  faults: FaultEvent[];
  queries: QueryTrack[];
  /** Why the session ended for the client (a refused resume). */
  ended?: string;
  /** Frames by seq, to tell a byte-identical repeat from a renumbered one. */
  bySeq: Map<number, string>;
}

/** A socket as the checker sees it. */
export interface SocketTrack {
  no: number;
  client: string;
  process: string;
  /** A fresh session, or a resume of `askedSession` from `askedSeq`. */
  kind: "fresh" | "resume";
  askedSession?: string;
  askedSeq?: number;
  state: "awaiting" | "live" | "abandoned" | "closed";
  session?: SessionTrack;
  openedAt: number;
  goneAt?: number;
  closeCode?: number;
  /** For a refused resume: the session the client lost. */
  refusedFrom?: SessionTrack;
  recent: Frame[];
}

const RING = 12;
const push = <T>(ring: T[], x: T, n = RING) => {
  ring.push(x);
  if (ring.length > n) ring.shift();
};

/** A frame shortened for a failure message. */
export function brief(f: Frame): Frame {
  const out: Frame = {};
  for (const k of ["seq", "type", "id", "event", "state", "code", "done", "finish_reason"]) {
    if (f[k] !== undefined) out[k] = f[k];
  }
  if (typeof f.delta === "string") out.delta = f.delta;
  if (typeof f.content === "string") {
    out.content = f.content.length > 40 ? `${f.content.slice(0, 40)}…` : f.content;
  }
  if (f.session_id !== undefined && f.event !== undefined) out.session_id = f.session_id;
  if (f.last_seq !== undefined) out.last_seq = f.last_seq;
  if (typeof f.message === "string" && f.type === "error") out.message = f.message.slice(0, 120);
  return out;
}

const emptyRow = (): Row => ({
  events: 0,
  queries: 0,
  answered: 0,
  interrupted: 0,
  refused: 0,
  lost: 0,
  doubled: 0,
  hanging: 0,
  unacked: 0,
  gaps: 0,
  repeats: 0,
  resume_gap: 0,
  not_found: 0,
});

/** Whether a frame ends a query. */
export function isTerminal(f: Frame): boolean {
  return (f.type === "response" && f.done === true) || (f.type === "error" && f.id !== undefined);
}

/**
 * Holds every client's view of its sessions and checks invariants (a)–(d) on
 * each frame as it comes; {@linkcode Checker.finish} adds what only the end
 * can tell (hanging queries) and counts.
 *
 * @example
 * ```ts ignore
 * const checker = new Checker();
 * const sock = checker.openSocket("c1", "p1", "fresh");
 * checker.onFrame(sock, { type: "notification", event: "connected", session_id: "s", seq: 1 });
 * const report = checker.finish();
 * assertInvariants(report);
 * ```
 */
export class Checker {
  readonly faults: FaultEvent[] = [];
  readonly violations: Violation[] = [];
  readonly #start = performance.now();
  readonly #sessions: SessionTrack[] = [];
  readonly #queries = new Map<string, QueryTrack>();
  /** Each client's current session. */
  readonly #current = new Map<string, SessionTrack>();
  readonly #refusals: { code: string; session: SessionTrack; fault: FaultKind | "none" }[] = [];
  #sockets = 0;
  /** Server log events, counted by the cluster. */
  serverEvents: Record<string, number> = {};
  /** Server log lines worth reading, picked by the cluster. */
  notable: string[] = [];

  /** ms since the checker started. */
  now(): number {
    return performance.now() - this.#start;
  }

  /** Records a forced event and the sessions and open queries it touches. */
  fault(kind: FaultKind, target: { process?: string; client?: string }): FaultEvent {
    const ev: FaultEvent = { n: this.faults.length + 1, kind, at: this.now(), ...target };
    this.faults.push(ev);
    for (const s of this.#sessions) {
      if (s.ended) continue;
      const touches = (ev.client !== undefined && ev.client === s.client) ||
        (ev.process !== undefined && s.processes.has(ev.process));
      if (!touches) continue;
      s.faults.push(ev);
      for (const q of s.queries) {
        if (q.terminals.length === 0 && !q.lost) q.faults.push(ev);
      }
    }
    return ev;
  }

  /** The client's current session id and last seq (what it resumes with). */
  position(client: string): { session: string; lastSeq: number } | undefined {
    const s = this.#current.get(client);
    return s && { session: s.id, lastSeq: s.lastSeq };
  }

  /** A socket the client opened on `process`. */
  openSocket(client: string, process: string, kind: "fresh" | "resume"): SocketTrack {
    const sock: SocketTrack = {
      no: ++this.#sockets,
      client,
      process,
      kind,
      state: "awaiting",
      openedAt: this.now(),
      recent: [],
    };
    if (kind === "resume") {
      const pos = this.#current.get(client);
      if (!pos) throw new Error(`${client} has no session to resume`);
      sock.askedSession = pos.id;
      sock.askedSeq = pos.lastSeq;
    }
    return sock;
  }

  /** The client stopped reading this socket (it moved on); later frames are not its view. */
  abandon(sock: SocketTrack): void {
    if (sock.state === "awaiting" || sock.state === "live") {
      sock.state = "abandoned";
      sock.goneAt = this.now();
    }
  }

  /** The socket closed. */
  onClose(sock: SocketTrack, code: number): void {
    sock.closeCode = code;
    if (sock.state !== "abandoned" && sock.state !== "closed") {
      sock.state = "closed";
      sock.goneAt = this.now();
    }
  }

  /** A query the client sent on `sock`. */
  querySent(sock: SocketTrack, id: string, expected: string, stream = true): void {
    const session = sock.session;
    if (!session || sock.state !== "live") throw new Error("a query on a socket that is not live");
    const q: QueryTrack = {
      id,
      client: sock.client,
      session,
      socket: sock,
      process: sock.process,
      sentAt: this.now(),
      expected,
      stream,
      accepted: false,
      deltas: "",
      deltaCount: 0,
      terminals: [],
      recent: [],
      faults: [],
      lost: false,
    };
    this.#queries.set(id, q);
    session.queries.push(q);
  }

  /** Whether the query has its terminal, was lost with its session, or was given up on. */
  settled(id: string): boolean {
    const q = this.#queries.get(id);
    return !q || q.terminals.length > 0 || q.lost;
  }

  /** Whether a query has seen any frame (the server accepted it). */
  accepted(id: string): boolean {
    return this.#queries.get(id)?.accepted ?? false;
  }

  /** The terminal frames of a query so far. */
  terminals(id: string): Frame[] {
    return this.#queries.get(id)?.terminals ?? [];
  }

  /** The socket a query was sent on. */
  socketOf(id: string): SocketTrack | undefined {
    return this.#queries.get(id)?.socket;
  }

  #violation(
    invariant: Invariant,
    detail: string,
    frames: Frame[],
    at: { session?: SessionTrack; query?: QueryTrack; client?: string },
  ): void {
    const faults = at.query?.faults.length ? at.query.faults : at.session?.faults ?? [];
    this.violations.push({
      invariant,
      fault: faults.at(-1)?.kind ?? "none",
      client: at.client ?? at.session?.client,
      session: at.session?.id,
      query: at.query?.id,
      detail,
      frames: frames.map(brief),
      faults: [...faults],
      wall: Date.now(),
    });
  }

  /** Something outside a session broke (a process crashed, a client could not reconnect). */
  outside(invariant: Invariant, detail: string, client?: string): void {
    const session = client ? this.#current.get(client) : undefined;
    this.#violation(invariant, detail, session?.recent ?? [], { session, client });
  }

  #newSession(sock: SocketTrack, id: string): SessionTrack {
    const s: SessionTrack = {
      id,
      client: sock.client,
      lastSeq: 0,
      recent: [],
      processes: new Set([sock.process]),
      faults: [],
      queries: [],
      bySeq: new Map(),
    };
    this.#sessions.push(s);
    this.#current.set(sock.client, s);
    sock.session = s;
    sock.state = "live";
    return s;
  }

  #endSession(s: SessionTrack, why: string): void {
    if (s.ended) return;
    s.ended = why;
    for (const q of s.queries) if (q.terminals.length === 0) q.lost = true;
  }

  /**
   * Feeds one frame the client read on `sock`. Returns whether it is part of
   * the client's view (frames of an abandoned socket are not).
   */
  onFrame(sock: SocketTrack, f: Frame): boolean {
    if (sock.state === "abandoned" || sock.state === "closed") return false;
    push(sock.recent, f);
    if (typeof f.seq !== "number") {
      this.#violation("protocol", `socket ${sock.no}: a frame without seq`, [f], {
        session: sock.session,
        client: sock.client,
      });
      return true;
    }
    if (f.seq === 0) {
      if (f.event === "resumed") {
        const s = this.#sessions.find((x) => x.id === sock.askedSession);
        if (sock.kind !== "resume" || sock.state !== "awaiting" || !s) {
          this.#violation("protocol", `socket ${sock.no}: an unexpected resumed`, [f], {
            client: sock.client,
          });
          return true;
        }
        if (f.session_id !== s.id || f.last_seq !== sock.askedSeq) {
          this.#violation(
            "protocol",
            `socket ${sock.no}: resumed ${f.session_id}@${f.last_seq}, asked ${s.id}@${sock.askedSeq}`,
            [f],
            { session: s },
          );
        }
        sock.session = s;
        sock.state = "live";
        s.processes.add(sock.process);
      }
      return true;
    }
    if (sock.state === "awaiting") {
      const asked = sock.kind === "resume"
        ? this.#sessions.find((x) => x.id === sock.askedSession)
        : undefined;
      if (asked && !(f.event === "connected" && f.seq === 1)) {
        // The session's frames came before `resumed` said the socket was resumed: a broken
        // promise of its own, but the frames are the session's; check them as such.
        this.#violation(
          "protocol",
          `socket ${sock.no} on ${sock.process}: seq ${f.seq} came before \`resumed\` ` +
            `(resume of ${asked.id} from ${sock.askedSeq})`,
          [...sock.recent],
          { session: asked },
        );
        sock.session = asked;
        sock.state = "live";
        asked.processes.add(sock.process);
      } else if (f.event !== "connected" || f.seq !== 1) {
        this.#violation(
          "protocol",
          `socket ${sock.no} (${sock.kind}): first session frame is not connected@1`,
          [f],
          { client: sock.client },
        );
        return true;
      }
    }
    if (sock.state === "awaiting") {
      const old = sock.kind === "resume"
        ? this.#sessions.find((x) => x.id === sock.askedSession)
        : undefined;
      const s = this.#newSession(sock, f.session_id);
      s.lastSeq = 1;
      s.bySeq.set(1, JSON.stringify(f));
      push(s.recent, f);
      if (old) {
        sock.refusedFrom = old;
        this.#endSession(old, "refused");
      }
      return true;
    }
    const s = sock.session!;
    push(s.recent, f);
    const text = JSON.stringify({ ...f, timestamp: undefined });
    if (f.seq <= s.lastSeq) {
      const first = s.bySeq.get(f.seq);
      const same = first === text;
      this.#violation(
        "b:repeat",
        `socket ${sock.no} on ${sock.process}: seq ${f.seq} again after ${s.lastSeq}` +
          (same ? " (the same frame)" : ` (a different frame: first was ${first})`),
        s.recent.slice(-6),
        { session: s, query: f.id ? this.#queries.get(f.id) : undefined },
      );
      if (same) return true;
    } else {
      if (f.seq > s.lastSeq + 1) {
        this.#violation(
          "b:gap",
          `socket ${sock.no} on ${sock.process}: seq ${s.lastSeq + 1}..${f.seq - 1} never came`,
          s.recent.slice(-6),
          { session: s, query: f.id ? this.#queries.get(f.id) : undefined },
        );
      }
      s.lastSeq = f.seq;
    }
    s.bySeq.set(f.seq, text);
    if (s.bySeq.size > 4096) s.bySeq.delete(s.bySeq.keys().next().value!);

    if (f.type === "error" && f.id === undefined && sock.refusedFrom) {
      const old = sock.refusedFrom;
      sock.refusedFrom = undefined;
      this.#refusals.push({ code: f.code, session: old, fault: old.faults.at(-1)?.kind ?? "none" });
      this.#violation(
        "b:resume_refused",
        `socket ${sock.no} on ${sock.process}: resume of ${old.id} from ${sock.askedSeq} refused: ` +
          `${f.code} "${f.message}"; ${
            old.queries.filter((q) => q.terminals.length === 0).length
          } open queries lost`,
        [...old.recent.slice(-6), f],
        { session: old },
      );
    }
    const q = typeof f.id === "string" ? this.#queries.get(f.id) : undefined;
    if (!q) return true;
    if (q.session !== s) {
      this.#violation("protocol", `a frame of ${q.id} in another session`, [f], { session: s });
      return true;
    }
    q.accepted = true;
    push(q.recent, f, 8);
    if (q.terminals.length > 0 && !isTerminal(f)) {
      this.#violation(
        "a:after_terminal",
        `query ${q.id}: a ${f.type} frame (seq ${f.seq}) after its terminal (seq ${
          q.terminals[0].seq
        })`,
        [q.terminals[0], f],
        { session: s, query: q },
      );
      return true;
    }
    if (f.type === "response" && f.done !== true && typeof f.delta === "string") {
      q.deltas += f.delta;
      q.deltaCount++;
    }
    if (!isTerminal(f)) return true;
    q.terminals.push(f);
    if (q.terminals.length === 2) {
      q.doubledBy = [...new Set(s.faults.filter((e) => e.at >= q.sentAt).map((e) => e.kind))];
      this.#violation(
        "a:doubled",
        `query ${q.id}: a second terminal (seq ${q.terminals[0].seq} and ${f.seq})`,
        q.terminals,
        { session: s, query: q },
      );
    }
    if (q.terminals.length > 1) return true;
    if (f.type === "response") {
      if (q.stream && q.deltas !== f.content) {
        this.#violation(
          "c:deltas",
          `query ${q.id}: ${q.deltaCount} deltas add up to ${JSON.stringify(q.deltas.slice(-60))}` +
            ` (${q.deltas.length} chars), the final content is ${f.content?.length} chars`,
          q.recent,
          { session: s, query: q },
        );
      }
      if (f.finish_reason === "stop" && f.content !== q.expected) {
        this.#violation(
          "c:content",
          `query ${q.id}: content ${JSON.stringify(String(f.content).slice(0, 80))} is not what ` +
            "the model said",
          [f],
          { session: s, query: q },
        );
      }
    } else if (
      f.code === "interrupted" &&
      // A process cut off from the database looks dead to the others: for them it crashed.
      !q.faults.some((e) => e.kind === "kill" || e.kind === "partition")
    ) {
      this.#violation(
        "d:interrupted",
        `query ${q.id} (sent on ${q.process}) ended interrupted with no crash of its process; ` +
          `faults since it was sent: ${
            q.faults.map((e) => `${e.kind}@${e.process ?? e.client}`).join(", ") || "none"
          }`,
        q.recent,
        { session: s, query: q },
      );
    }
    return true;
  }

  /**
   * Ends the run: queries with no terminal are hanging (or never accepted),
   * and everything is counted per fault kind. Later calls return the same report.
   */
  finish(durationMs = this.now()): Report {
    this.#report ??= this.#count(durationMs);
    return this.#report;
  }

  #report?: Report;

  #count(durationMs: number): Report {
    const now = this.now();
    const rows = Object.fromEntries(
      [...FAULT_KINDS, "none"].map((k) => [k, emptyRow()]),
    ) as Record<FaultKind | "none", Row>;
    for (const ev of this.faults) rows[ev.kind].events++;
    const total = emptyRow();
    const refusedCodes: Record<string, number> = {};
    for (const q of this.#queries.values()) {
      // A query counts in the row of every kind of fault that touched it while it was open.
      const kinds = [...new Set(q.faults.map((e) => e.kind))];
      const into = [total, ...(kinds.length ? kinds : ["none" as const]).map((k) => rows[k])];
      const count = (k: keyof Row) => into.forEach((r) => r[k]++);
      count("queries");
      if (q.terminals.length > 1) {
        total.doubled++;
        for (const k of q.doubledBy?.length ? q.doubledBy : ["none" as const]) rows[k].doubled++;
      }
      const t = q.terminals[0];
      if (t) {
        if (t.type === "response") count("answered");
        else if (t.code === "interrupted") count("interrupted");
        else {
          count("refused");
          refusedCodes[t.code] = (refusedCodes[t.code] ?? 0) + 1;
        }
      } else if (q.lost) count("lost");
      else if (!q.accepted) {
        const openFor = (q.socket.goneAt ?? now) - q.sentAt;
        // A query's first frame is sent once written: while the database is away, it waits
        // until the store gives up on it (about 10 s).
        const patience = q.faults.some((e) => e.kind === "db_cut" || e.kind === "partition")
          ? 12_000
          : 2000;
        if (openFor < patience) count("unacked");
        else {
          count("hanging");
          this.#violation(
            "a:unanswered_frame",
            `query ${q.id} sent on socket ${q.socket.no} (${q.process}), which stayed open ` +
              `${Math.round(openFor)} ms: no frame for it ever came`,
            q.session.recent.slice(-6),
            { session: q.session, query: q },
          );
        }
      } else {
        count("hanging");
        this.#violation(
          "a:hanging",
          `query ${q.id} (sent on ${q.process}) has no terminal; ${q.deltaCount} deltas seen`,
          q.recent,
          { session: q.session, query: q },
        );
      }
    }
    // Session-level breaks count under the last fault that touched the session.
    for (const v of this.violations) {
      const k = v.invariant === "b:gap" ? "gaps" : v.invariant === "b:repeat" ? "repeats" : null;
      if (k) {
        rows[v.fault][k]++;
        total[k]++;
      }
    }
    for (const r of this.#refusals) {
      const k = r.code === "resume_gap" ? "resume_gap" : "not_found";
      rows[r.fault][k]++;
      total[k]++;
    }
    total.events = this.faults.length;
    return {
      rows,
      total,
      violations: this.violations,
      serverEvents: this.serverEvents,
      refusedCodes,
      notable: this.notable,
      durationMs,
    };
  }
}

/** The counts table, one row per fault kind the outcome is put down to. */
export function formatReport(report: Report): string {
  const cols = Object.keys(report.total) as (keyof Row)[];
  const head = ["cause", ...cols];
  const lines = [head.map((h) => h.padStart(h === "cause" ? 10 : Math.max(6, h.length))).join(" ")];
  const row = (name: string, r: Row) =>
    [name.padStart(10), ...cols.map((c) => String(r[c]).padStart(Math.max(6, c.length)))].join(" ");
  for (const [name, r] of Object.entries(report.rows)) {
    if (r.events > 0 || r.queries > 0) lines.push(row(name, r));
  }
  lines.push(row("total", report.total));
  const byInvariant: Record<string, number> = {};
  for (const v of report.violations) byInvariant[v.invariant] = (byInvariant[v.invariant] ?? 0) + 1;
  lines.push(`violations: ${JSON.stringify(byInvariant)}`);
  lines.push(`refused (error terminals by code): ${JSON.stringify(report.refusedCodes)}`);
  lines.push(`server log: ${JSON.stringify(report.serverEvents)}`);
  for (const l of report.notable.slice(0, 6)) lines.push(`  ${l.slice(0, 300)}`);
  lines.push(`duration: ${(report.durationMs / 1000).toFixed(1)} s`);
  return lines.join("\n");
}

/** One violation, readable. */
export function describeViolation(v: Violation): string {
  const faults = v.faults.map((e) => `#${e.n} ${e.kind}@${e.process ?? e.client} t=${e.at | 0}`);
  return `[${v.invariant}] after ${v.fault}: ${v.detail}\n` +
    `    client ${v.client ?? "-"} session ${v.session ?? "-"} query ${v.query ?? "-"}\n` +
    `    faults: ${faults.join(", ") || "none"}\n` +
    v.frames.map((f) => `    ${JSON.stringify(f)}`).join("\n") +
    (v.logs?.length ? `\n    server log:\n${v.logs.map((l) => `      ${l}`).join("\n")}` : "");
}

/**
 * Throws, naming each broken invariant with its frames (at most `max` per
 * invariant), unless the report is clean. `ignore` leaves out invariants a
 * test does not judge.
 */
export function assertInvariants(
  report: Report,
  opts: { ignore?: Invariant[]; max?: number; title?: string } = {},
): void {
  const bad = report.violations.filter((v) => !opts.ignore?.includes(v.invariant));
  if (bad.length === 0) return;
  const groups = new Map<Invariant, Violation[]>();
  for (const v of bad) groups.set(v.invariant, [...(groups.get(v.invariant) ?? []), v]);
  const parts: string[] = [];
  for (const [inv, vs] of groups) {
    parts.push(`${inv}: ${vs.length}`);
    for (const v of vs.slice(0, opts.max ?? 3)) parts.push(describeViolation(v));
  }
  throw new Error(
    `${opts.title ? `${opts.title}: ` : ""}${bad.length} invariant violations\n` +
      `${parts.join("\n")}\n${formatReport(report)}`,
  );
}

// ---------------------------------------------------------------------------
// The cluster: processes, proxies, the simulator.

/** A server process in the cluster. */
export interface Node {
  name: string;
  proc: ServerProcess;
  proxy?: TcpProxy;
  wsUrl: string;
  /** live: takes new sockets; draining: SIGTERM sent, not yet exited; dead: gone. */
  state: "live" | "draining" | "dead";
  partitioned: boolean;
  expectedExit: boolean;
}

/** Options for {@linkcode Cluster.start}. */
export interface ClusterOptions {
  processes?: number;
  /** A TCP proxy in front of Postgres per process (default true). */
  proxy?: boolean;
  /** Extra environment for every process. */
  env?: Record<string, string>;
  /** The long answer: tokens and the gap between them (default 40 × 20 ms). */
  answer?: { tokens: number; gapMs: number };
}

const LONG = "[chaos-long]";
const SHORT = "[chaos-short]";

/** Events in the servers' logs that the report counts. */
const LOGGED = [
  "session_adopted",
  "adopt_failed",
  "resume_refused",
  "session_handover",
  "session_lost",
  "store_unavailable",
  "store_recovered",
  "store_client_replaced",
  "unhandled_rejection",
];

/** Log events whose lines the report quotes. */
const NOTABLE = ["adopt_failed", "resume_refused", "session_lost", "unhandled_rejection"];

/**
 * Real server processes on one database, each behind its own TCP proxy to
 * Postgres, answering from one simulator.
 *
 * @example
 * ```ts ignore
 * const cluster = await Cluster.start({ processes: 2 });
 * const client = cluster.client("c1");
 * await client.open(cluster.live()[0]);
 * await client.settle(client.query(), 10_000);
 * await cluster.close();
 * ```
 */
export class Cluster {
  readonly nodes: Node[] = [];
  readonly checker = new Checker();
  readonly clients: ChaosClient[] = [];
  /** The long answer's text. */
  readonly longAnswer: string;
  readonly shortAnswer: string;
  #count = 0;

  private constructor(readonly sim: Simulator, readonly opts: ClusterOptions) {
    const { tokens, gapMs } = opts.answer ?? { tokens: 40, gapMs: 20 };
    const long = Array.from({ length: tokens }, (_, i) => `w${i} `);
    const short = Array.from({ length: 4 }, (_, i) => `s${i} `);
    sim.when(LONG, { kind: "stream", tokens: long, gapMs });
    sim.when(SHORT, { kind: "stream", tokens: short, gapMs: 5 });
    this.longAnswer = long.join("");
    this.shortAnswer = short.join("");
  }

  /** Starts the simulator and `processes` server processes. */
  static async start(opts: ClusterOptions = {}): Promise<Cluster> {
    const cluster = new Cluster(startSimulator({ tokenDelayMs: 2 }), opts);
    try {
      await Promise.all(Array.from({ length: opts.processes ?? 2 }, () => cluster.spawn()));
    } catch (err) {
      await cluster.close();
      throw err;
    }
    return cluster;
  }

  /** Processes that take new sockets. */
  live(): Node[] {
    return this.nodes.filter((n) => n.state === "live");
  }

  /** Processes a socket can reach (live or draining). */
  reachable(): Node[] {
    return this.nodes.filter((n) => n.state !== "dead");
  }

  /** Starts one more process. */
  async spawn(): Promise<Node> {
    const name = `p${++this.#count}`;
    const proxy = this.opts.proxy === false
      ? undefined
      : startTcpProxy(Number(new URL(DATABASE_URL).port || 5432));
    const dbUrl = new URL(DATABASE_URL);
    if (proxy) {
      dbUrl.hostname = "127.0.0.1";
      dbUrl.port = String(proxy.port);
    }
    let proc: ServerProcess;
    try {
      proc = await startServerProcess({
        OPENROUTER_API_KEY: TEST_API_KEY,
        OPENROUTER_BASE_URL: this.sim.url,
        SESSION_STORE: "postgres",
        DATABASE_URL: dbUrl.toString(),
        RESUME_WINDOW_SECONDS: "120",
        SWEEP_INTERVAL_SECONDS: "0.5",
        FRAME_FLUSH_MS: "10",
        RATE_LIMIT_BURST: "10000",
        RATE_LIMIT_PER_MINUTE: "100000",
        MAX_CONNECTIONS_PER_USER: "1000",
        MAX_SESSIONS_PER_USER: "10000",
        DRAIN_GRACE_SECONDS: "5",
        SESSION_TIMEOUT: "600",
        ...this.opts.env,
      });
    } catch (err) {
      await proxy?.close();
      throw err;
    }
    const node: Node = {
      name,
      proc,
      proxy,
      wsUrl: proc.wsUrl,
      state: "live",
      partitioned: false,
      expectedExit: false,
    };
    this.nodes.push(node);
    proc.status.then((s) => {
      node.state = "dead";
      if (!node.expectedExit) {
        this.checker.outside(
          "process_crashed",
          `${name} exited by itself (code ${s.code}, signal ${s.signal}); last lines:\n` +
            proc.lines.slice(-8).join("\n"),
        );
      }
    });
    return node;
  }

  /** A client of this cluster. */
  client(name: string): ChaosClient {
    const c = new ChaosClient(this, name);
    this.clients.push(c);
    return c;
  }

  /** What a query's content asks for, and the answer the model gives. */
  ask(kind: "long" | "short", id: string): { content: string; expected: string } {
    return kind === "long"
      ? { content: `${LONG} ${id}`, expected: this.longAnswer }
      : { content: `${SHORT} ${id}`, expected: this.shortAnswer };
  }

  /**
   * SIGKILL (a crash) or SIGTERM (a planned stop) of `node`, recorded as a
   * fault first; by default a fresh process replaces it. SIGKILL waits for the
   * exit, SIGTERM only for the replacement (the old one drains meanwhile).
   */
  async stop(node: Node, signal: "SIGKILL" | "SIGTERM", replace = true): Promise<void> {
    if (node.state === "dead") return;
    node.expectedExit = true;
    this.checker.fault(signal === "SIGKILL" ? "kill" : "term", { process: node.name });
    if (signal === "SIGKILL") {
      node.state = "dead";
      await node.proc.kill("SIGKILL");
      await node.proxy?.close();
    } else {
      node.state = "draining";
      node.proc.kill("SIGTERM").then(() => node.proxy?.close());
    }
    if (replace) await this.spawn();
  }

  /** Cuts every database connection of `node` once. */
  cutDb(node: Node): void {
    this.checker.fault("db_cut", { process: node.name });
    node.proxy?.cutAll();
  }

  /** Cuts `node` off from Postgres for `ms` (connections cut, new ones refused). */
  partition(node: Node, ms: number): Promise<void> {
    this.checker.fault("partition", { process: node.name });
    node.partitioned = true;
    if (node.proxy) {
      node.proxy.refuse = true;
      node.proxy.cutAll();
    }
    return new Promise((resolve) =>
      setTimeout(() => {
        this.heal(node);
        resolve();
      }, ms)
    );
  }

  /** Lets `node` reach Postgres again. */
  heal(node: Node): void {
    node.partitioned = false;
    if (node.proxy) node.proxy.refuse = false;
  }

  /** Every process's log lines, each after its process's name, in time order. */
  allLogs(): string[] {
    const lines = this.nodes.flatMap((n) => n.proc.lines.map((l) => `${n.name} ${l}`));
    const at = (l: string) => /"time":"([^"]*)"/.exec(l)?.[1] ?? "";
    return lines.sort((a, b) => at(a).localeCompare(at(b)));
  }

  /** Counts what the servers logged (and keeps a few lines worth reading in the checker). */
  countLogs(): Record<string, number> {
    const counts: Record<string, number> = {};
    const notable: string[] = [];
    for (const node of this.nodes) {
      for (const line of node.proc.lines) {
        const uncaught = line.includes("Uncaught");
        if (uncaught) counts.uncaught = (counts.uncaught ?? 0) + 1;
        const m = /"event":"([a-z_]+)"/.exec(line);
        if (m && LOGGED.includes(m[1])) counts[m[1]] = (counts[m[1]] ?? 0) + 1;
        if (uncaught || (m && NOTABLE.includes(m[1]))) notable.push(`${node.name} ${line}`);
      }
    }
    this.checker.serverEvents = counts;
    this.checker.notable = notable;
    return counts;
  }

  /**
   * The server log lines that mention `needle` (a session or query id), in
   * time order, the last `max` up to 500 ms after `until` (ms since the epoch).
   */
  logsAbout(needle: string, until = Infinity, max = 20): string[] {
    const out: [string, string][] = [];
    for (const node of this.nodes) {
      for (const line of node.proc.lines) {
        if (!line.includes(needle)) continue;
        const time = /"time":"([^"]*)"/.exec(line)?.[1] ?? "";
        if (Date.parse(time) > until + 500) continue;
        const short = line.replace(/\{"time":"[^"]*T([^"]*)Z",("level":"\w+",)?/, "$1 {");
        out.push([time, `${node.name} ${short.replaceAll(needle, "<s>").slice(0, 240)}`]);
      }
    }
    return out.sort((a, b) => a[0].localeCompare(b[0])).slice(-max).map((x) => x[1]);
  }

  /**
   * Adds the server log lines about each violation's session to the first few
   * violations of each invariant, so a failure shows what the servers did.
   */
  annotate(perInvariant = 3, lines = 12): void {
    const seen = new Map<string, number>();
    for (const v of this.checker.violations) {
      const n = seen.get(v.invariant) ?? 0;
      seen.set(v.invariant, n + 1);
      if (n >= perInvariant || !v.session || v.logs) continue;
      v.logs = this.logsAbout(v.session, v.wall, lines);
    }
  }

  /** Closes the clients, stops every process and the simulator. */
  async close(): Promise<void> {
    this.countLogs();
    await Promise.allSettled(this.clients.map((c) => c.close()));
    await Promise.allSettled(this.nodes.map(async (n) => {
      n.expectedExit = true;
      if (n.state !== "dead") await n.proc.kill("SIGKILL");
      await n.proc.status;
      await n.proxy?.close();
    }));
    await this.sim.close();
  }
}

// ---------------------------------------------------------------------------
// A client: raw WebSocket, reconnecting with session_id + last_seq.

interface LiveSocket {
  ws: WebSocket;
  track: SocketTrack;
  node: Node;
  closed: Promise<number>;
}

/** How long a socket may take to be greeted (`connected` or `resumed`) before it is given up. */
const ATTACH_MS = 8000;

const pick = <T>(xs: T[], rnd = Math.random): T => xs[Math.floor(rnd() * xs.length)];

/**
 * A client on raw WebSockets. It records every frame through the cluster's
 * checker; with `auto` on it resumes on a random process whenever the server
 * closes its socket (as the SDK does).
 */
export class ChaosClient {
  /** Resume on its own when the server closes the socket. */
  auto = false;
  /** Set while the client is moving between sockets. */
  moving = false;
  #sock?: LiveSocket;
  #waiters: { pred: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];
  /** Frames of the client's view, most recent last (bounded). */
  readonly view: Frame[] = [];
  #n = 0;
  closing = false;
  /** Close codes of the sockets the server closed under the client (not the ones it left). */
  readonly serverCloses: number[] = [];
  /** How resumes went: "resumed", "refused", or "redirected" (closed before resumed). */
  readonly resumes: string[] = [];

  constructor(readonly cluster: Cluster, readonly name: string) {}

  get checker(): Checker {
    return this.cluster.checker;
  }

  /** The current socket's state. */
  get live(): boolean {
    return this.#sock?.track.state === "live";
  }

  /** The current socket's process. */
  get node(): Node | undefined {
    return this.#sock?.node;
  }

  /** The current session and last seq. */
  get position(): { session: string; lastSeq: number } | undefined {
    return this.checker.position(this.name);
  }

  /** Resolves when the current socket closes (with its code). */
  get closed(): Promise<number> {
    return this.#sock?.closed ?? Promise.resolve(0);
  }

  #attach(node: Node, kind: "fresh" | "resume"): Promise<LiveSocket> {
    const pos = this.position;
    const url = kind === "resume" && pos
      ? `${node.wsUrl}?session_id=${pos.session}&last_seq=${pos.lastSeq}`
      : node.wsUrl;
    const track = this.checker.openSocket(this.name, node.name, kind);
    const ws = new WebSocket(url);
    let closedResolve!: (code: number) => void;
    const live: LiveSocket = {
      ws,
      track,
      node,
      closed: new Promise((r) => (closedResolve = r)),
    };
    return new Promise<LiveSocket>((resolve, reject) => {
      let opened = false;
      // A socket that is not resumed in time is given up for good: closed and no longer
      // read, so that it cannot come alive later beside the one the client moved on to.
      const giveUp = setTimeout(() => {
        if (track.state !== "awaiting") return;
        this.checker.abandon(track);
        ws.close(1000);
        reject(new Error(`no session on ${node.name} after ${ATTACH_MS} ms`));
      }, ATTACH_MS);
      ws.onopen = () => {
        opened = true;
      };
      ws.onmessage = (e) => {
        let f: Frame;
        try {
          f = JSON.parse(e.data);
        } catch {
          this.checker.outside("protocol", `${this.name}: a frame that is not JSON`, this.name);
          return;
        }
        if (!this.checker.onFrame(track, f)) return;
        push(this.view, f, 200);
        this.#waiters = this.#waiters.filter((w) => {
          if (!w.pred(f)) return true;
          w.resolve(f);
          return false;
        });
        if (track.state === "live" && this.#sock !== live) {
          // Current from its first live frame on: a close after this is the server letting go.
          clearTimeout(giveUp);
          this.#sock = live;
          if (kind === "resume") this.resumes.push(track.refusedFrom ? "refused" : "resumed");
          resolve(live);
        }
      };
      ws.onclose = (e) => {
        clearTimeout(giveUp);
        const wasOurs = track.state === "awaiting" || track.state === "live";
        if (track.state === "live") this.serverCloses.push(e.code);
        if (track.kind === "resume" && track.state === "awaiting") this.resumes.push("redirected");
        this.checker.onClose(track, e.code);
        closedResolve(e.code);
        if (!opened || this.#sock !== live) {
          reject(
            new Error(`socket to ${node.name} closed (${e.code}) before the session was ready`),
          );
        } else if (wasOurs && this.auto && !this.closing) {
          // The server let go (crash, shutdown, takeover): resume elsewhere, as the SDK does.
          setTimeout(() => this.#autoResume(), Math.random() * 100);
        }
      };
      ws.onerror = () => {};
    });
  }

  async #autoResume(): Promise<void> {
    // A move in progress may end with a live socket, or not: wait and see.
    while (this.moving) await new Promise((r) => setTimeout(r, 20));
    if (this.closing || this.live) return;
    this.moving = true;
    try {
      await this.#resumeSomewhere();
    } finally {
      this.moving = false;
    }
  }

  /** Resumes on a random reachable process, trying others until one takes it (≤ 15 s). */
  async #resumeSomewhere(prefer?: Node): Promise<void> {
    const end = performance.now() + 15_000;
    let target = prefer;
    while (!this.closing) {
      const nodes = this.cluster.reachable();
      target ??= nodes.length ? pick(nodes) : undefined;
      if (target) {
        try {
          await deadline(
            this.#attach(target, this.position ? "resume" : "fresh"),
            10_000,
            "resume",
          );
          return;
        } catch {
          // That process went away or said to go elsewhere: try another.
        }
      }
      target = undefined;
      if (performance.now() > end) {
        this.checker.outside("client_stuck", `${this.name} could not resume for 15 s`, this.name);
        return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Opens a fresh session on `node`. */
  async open(node: Node): Promise<void> {
    await this.#attach(node, "fresh");
  }

  /**
   * Resumes on `node` (or a random process). With `overlap` the old socket
   * stays open until the new one is resumed (the client stops reading it at
   * once); otherwise it is closed first. Leaving a live socket is recorded as
   * a `switch` or `reconnect` fault; with `fallback`, a resume that `node`
   * refuses goes on to a random process.
   */
  async resume(node?: Node, opts: { overlap?: boolean; fallback?: boolean } = {}): Promise<void> {
    while (this.moving) await new Promise((r) => setTimeout(r, 20));
    this.moving = true;
    const old = this.#sock;
    try {
      // Leaving a socket that works is a forced event; resuming after the server let go is not.
      if (old?.track.state === "live") {
        this.checker.fault(opts.overlap ? "switch" : "reconnect", { client: this.name });
      }
      if (old) this.checker.abandon(old.track);
      if (old && !opts.overlap) old.ws.close(1000);
      if (!node) return await this.#resumeSomewhere();
      try {
        await this.#attach(node, "resume");
      } catch (err) {
        if (!opts.fallback) throw err;
        await this.#resumeSomewhere();
      }
    } finally {
      if (old && opts.overlap && old.ws.readyState < WebSocket.CLOSING) old.ws.close(1000);
      this.moving = false;
    }
  }

  /** Closes the socket from the client side and stops reading it. */
  drop(): void {
    const old = this.#sock;
    if (!old) return;
    this.checker.abandon(old.track);
    old.ws.close(1000);
  }

  /** Sends a query (long answer by default) and returns its id. */
  query(kind: "long" | "short" = "long"): string {
    const sock = this.#sock;
    if (!sock || sock.track.state !== "live") throw new Error(`${this.name} is not connected`);
    const id = `${this.name}-q${++this.#n}`;
    const { content, expected } = this.cluster.ask(kind, id);
    this.checker.querySent(sock.track, id, expected);
    sock.ws.send(JSON.stringify({ type: "query", id, content }));
    return id;
  }

  /** Sends frames the checker does not follow (pings, say) on the current socket. */
  sendRaw(frames: Frame[]): void {
    const sock = this.#sock;
    if (!sock || sock.track.state !== "live") throw new Error(`${this.name} is not connected`);
    for (const f of frames) sock.ws.send(JSON.stringify(f));
  }

  /** Waits for a frame of the client's view matching `pred`, from now on. */
  next(pred: (f: Frame) => boolean, what: string, ms = 5000): Promise<Frame> {
    return deadline(
      new Promise<Frame>((resolve) => this.#waiters.push({ pred, resolve })),
      ms,
      `${this.name}: ${what}; last frames: ${JSON.stringify(this.view.slice(-4).map(brief))}`,
    );
  }

  /** Waits until the client holds a live socket. */
  async ready(ms = 15_000): Promise<void> {
    const end = performance.now() + ms;
    while (!this.live) {
      if (performance.now() > end) throw new Error(`${this.name} not connected after ${ms} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Waits until the query has its terminal or was lost with its session; or,
   * when it was never accepted and its socket went away, until 3 s have shown
   * it will not come. Returns how it ended ("timeout" after `ms`).
   */
  async settle(id: string, ms = 15_000): Promise<"terminal" | "lost" | "unacked" | "timeout"> {
    const end = performance.now() + ms;
    for (;;) {
      if (this.checker.terminals(id).length > 0) return "terminal";
      if (this.checker.settled(id)) return "lost";
      const sock = this.checker.socketOf(id);
      if (
        sock?.goneAt !== undefined && !this.checker.accepted(id) &&
        this.checker.now() - sock.goneAt > 3000 && this.live
      ) return "unacked";
      if (performance.now() > end) return "timeout";
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Closes the socket for good. */
  async close(): Promise<void> {
    this.closing = true;
    const sock = this.#sock;
    if (!sock) return;
    this.checker.abandon(sock.track);
    if (sock.ws.readyState < WebSocket.CLOSING) sock.ws.close(1000);
    await deadline(sock.closed, 3000, "close").catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// A chaos run.

/** Options for {@linkcode runChaos}. */
export interface ChaosOptions {
  processes?: number;
  clients?: number;
  /** Forced events to make. */
  events?: number;
  /** How long to spread them over (default 300 ms per event). */
  durationMs?: number;
  /** Relative weights of the fault kinds. */
  weights?: Partial<Record<FaultKind, number>>;
  /** Seed of the choices (not of the timing). */
  seed?: number;
  /** Where progress lines go. */
  log?: (line: string) => void;
  answer?: { tokens: number; gapMs: number };
  /** Server log lines for every violation (default: the first 3 of each invariant). */
  annotateAll?: boolean;
  /** A file to write every process's log lines to, in time order, for reading at leisure. */
  logsTo?: string;
}

const DEFAULT_WEIGHTS: Record<FaultKind, number> = {
  reconnect: 30,
  switch: 15,
  kill: 12,
  term: 12,
  db_cut: 21,
  partition: 10,
};

/** A small seeded PRNG (mulberry32), so a run's choices can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs clients against the cluster while forcing `events` faults at random
 * points, then lets every query settle (≤ 30 s) and returns the report.
 *
 * @example
 * ```ts ignore
 * const report = await runChaos({ events: 200, clients: 8 });
 * console.log(formatReport(report));
 * assertInvariants(report);
 * ```
 */
export async function runChaos(opts: ChaosOptions = {}): Promise<Report> {
  const events = opts.events ?? 200;
  const durationMs = opts.durationMs ?? events * 300;
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
  const rnd = prng(seed);
  const log = opts.log ?? (() => {});
  const weights = { ...DEFAULT_WEIGHTS, ...opts.weights };
  const cluster = await Cluster.start({ processes: opts.processes ?? 2, answer: opts.answer });
  const started = performance.now();
  log(`chaos: seed ${seed}, ${events} events over ${durationMs / 1000} s`);
  const ctl = { stopping: false, settleBy: Infinity };
  const healing: Promise<void>[] = [];
  try {
    const clients = Array.from({ length: opts.clients ?? 8 }, (_, i) => {
      const c = cluster.client(`c${i + 1}`);
      c.auto = true;
      return c;
    });
    await Promise.all(clients.map((c, i) => c.open(cluster.live()[i % cluster.live().length])));
    const loops = clients.map((c) => clientLoop(c, ctl, rnd));

    const kinds = FAULT_KINDS.filter((k) => weights[k] > 0);
    const sum = kinds.reduce((s, k) => s + weights[k], 0);
    const chooseKind = () => {
      let x = rnd() * sum;
      for (const k of kinds) if ((x -= weights[k]) < 0) return k;
      return kinds[0];
    };
    let done = 0;
    const gap = durationMs / events;
    while (done < events) {
      await new Promise((r) => setTimeout(r, gap * (0.5 + rnd())));
      const kind = chooseKind();
      const live = cluster.live();
      const idle = clients.filter((c) => c.live && !c.moving);
      if (kind === "reconnect" || kind === "switch") {
        if (idle.length === 0) continue;
        const c = pick(idle, rnd);
        const others = live.filter((n) => n !== c.node);
        if (kind === "switch" && others.length === 0) continue;
        const target = kind === "switch" ? pick(others, rnd) : undefined;
        c.resume(target, { overlap: kind === "switch", fallback: true }).catch(() => {});
      } else if (kind === "kill" || kind === "term") {
        if (live.length < 2) continue;
        await cluster.stop(pick(live, rnd), kind === "kill" ? "SIGKILL" : "SIGTERM");
      } else if (kind === "db_cut") {
        if (live.length === 0) continue;
        cluster.cutDb(pick(live, rnd));
      } else {
        const free = live.filter((n) => !n.partitioned);
        if (free.length === 0) continue;
        healing.push(cluster.partition(pick(free, rnd), 1000 + rnd() * 2000));
      }
      done++;
      if (done % 50 === 0) {
        log(`  ${done}/${events} events, ${((performance.now() - started) / 1000).toFixed(0)} s`);
      }
    }
    // No more faults: what is open gets 20 s to end (an answer takes about one).
    ctl.settleBy = performance.now() + 20_000;
    ctl.stopping = true;
    await Promise.all(healing);
    await Promise.all(loops);
    cluster.countLogs();
    const report = cluster.checker.finish(performance.now() - started);
    cluster.annotate(opts.annotateAll ? Infinity : 3);
    if (opts.logsTo) await Deno.writeTextFile(opts.logsTo, cluster.allLogs().join("\n") + "\n");
    return report;
  } finally {
    ctl.stopping = true;
    for (const n of cluster.nodes) cluster.heal(n);
    await cluster.close();
  }
}

/** One client's questions: one at a time (sometimes two queued), until told to stop. */
async function clientLoop(
  c: ChaosClient,
  ctl: { stopping: boolean; settleBy: number },
  rnd: () => number,
) {
  while (!ctl.stopping) {
    try {
      await c.ready(20_000);
    } catch {
      c.checker.outside("client_stuck", `${c.name} had no socket for 20 s`, c.name);
      return;
    }
    let ids: string[];
    try {
      ids = [c.query(rnd() < 0.85 ? "long" : "short")];
      if (rnd() < 0.15) ids.push(c.query("short"));
    } catch {
      continue; // The socket went between the check and the send.
    }
    for (const id of ids) {
      await c.settle(id, ctl.stopping ? Math.max(0, ctl.settleBy - performance.now()) : 15_000);
    }
    await new Promise((r) => setTimeout(r, rnd() * 50));
  }
}
