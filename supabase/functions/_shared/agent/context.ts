/**
 * The context every hook, command and tool gets: who the user is (with all
 * their claims), the session and its state, a logger, a way to send a frame
 * of one's own, and a Supabase client that acts as the user.
 *
 * @module
 */
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { Session } from "../session/session.ts";
import { notificationFrame } from "../session/socket.ts";
import type { InFlight } from "../turn/turns.ts";
import { DEFAULT_SEARCH_LIMIT, MAX_QUERY_CHARS, MAX_SEARCH_LIMIT } from "../store/memory.ts";
import type {
  AgentContext,
  AgentMemory,
  AgentUser,
  CommandContext,
  ConnectContext,
  TurnContext,
} from "./definition.ts";

/** Supabase clients acting as a user, one per access token, made on first use. */
const asUserClients = new WeakMap<Session, { token: string; client: SupabaseClient }>();

/**
 * A Supabase client that sends the user's own access token, so Row Level
 * Security applies to everything it reads and writes. Null without auth or
 * without `SUPABASE_URL` + `SUPABASE_ANON_KEY`.
 *
 * @example
 * ```ts ignore
 * const db = supabaseAsUser(config, token);
 * const { data } = await db!.from("notes").select("*");
 * ```
 */
export function supabaseAsUser(config: Config, token: string | null): SupabaseClient | null {
  if (!config.supabase || !token) return null;
  return createClient(config.supabase.url, config.supabase.anonKey, {
    global: { headers: { Authorization: `Bearer ${token}` } },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

/**
 * The memory of a session's user: every read is scoped to its owner.
 *
 * @example
 * ```ts ignore
 * const hits = await memoryOf(session).search("lisbon", 5);
 * ```
 */
export function memoryOf(session: Session): AgentMemory {
  return {
    search: (query, limit = DEFAULT_SEARCH_LIMIT) =>
      session.store.searchMemory(
        session.owner,
        String(query).slice(0, MAX_QUERY_CHARS),
        Math.min(MAX_SEARCH_LIMIT, Math.max(1, Math.floor(limit) || DEFAULT_SEARCH_LIMIT)),
      ),
    conversations: () => session.store.conversations(session.owner),
  };
}

/** Builds contexts; see {@linkcode createContexts}. */
export interface Contexts {
  forSession(session: Session): AgentContext;
  forTurn(session: Session, turn: InFlight): TurnContext;
  forCommand(session: Session, commandId?: string): CommandContext;
  forConnect(
    conn: { user: AgentUser | null; token: string | null; state: Record<string, unknown> },
    url: URL,
    resuming: boolean,
  ): ConnectContext;
}

/**
 * @example
 * ```ts ignore
 * const contexts = createContexts(config, log);
 * const ctx = contexts.forTurn(session, turn);
 * ```
 */
export function createContexts(config: Config, log: Logger): Contexts {
  function supabaseFor(session: Session): SupabaseClient | null {
    const token = session.token;
    if (!token || !config.supabase) return null;
    const cached = asUserClients.get(session);
    if (cached && cached.token === token) return cached.client;
    const client = supabaseAsUser(config, token)!;
    asUserClients.set(session, { token, client });
    return client;
  }

  function forSession(session: Session): AgentContext {
    return {
      // Read at use: a turn carried on after a takeover starts before its socket is bound.
      get user() {
        return session.user;
      },
      session: { id: session.id, conversation: session.conversation },
      state: session.state,
      log,
      get supabase() {
        return supabaseFor(session);
      },
      notify: (event, content, data) => session.emit(notificationFrame(event, content, data)),
      memory: memoryOf(session),
    };
  }

  return {
    forSession,
    forTurn(session, turn) {
      const q = turn.query;
      return Object.assign(forSession(session), {
        query: { id: q.id, content: q.content, metadata: q.metadata, model: q.model },
        signal: turn.signal,
      });
    },
    forCommand(session, commandId) {
      return Object.assign(forSession(session), { commandId });
    },
    forConnect(conn, url, resuming) {
      let client: SupabaseClient | null | undefined;
      return {
        user: conn.user,
        state: conn.state,
        log,
        get supabase() {
          return client === undefined ? client = supabaseAsUser(config, conn.token) : client;
        },
        // Before the session exists there is nowhere to send a frame; it is dropped.
        notify: () => {},
        url,
        resuming,
      };
    },
  };
}
