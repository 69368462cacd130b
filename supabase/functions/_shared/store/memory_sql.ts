/**
 * The SQL of memory on Postgres (migration 20261202000000_conversations.sql):
 * listing, searching and clearing a user's conversations, recording what was
 * said in them, and expiring it. Every read is narrowed to one owner through
 * the `coalesce(owner, '')` expression indexes; owner null (auth off) is its
 * own namespace, and a real user id is never empty (auth refuses an empty
 * `sub`), so it never meets a user's.
 *
 * @module
 */
import type postgres from "postgres";
import type { ConversationSummary, MemoryHit } from "../protocol/wire.ts";
import { HIT_CHARS, hitContent, MAX_CONVERSATIONS_LISTED } from "./memory.ts";

/** A message waiting to be written for search; `id` makes a retried write insert it once. */
export interface PendingMessage {
  id: string;
  role: "user" | "assistant";
  content: string;
  /** ISO 8601: when it was said. */
  at: string;
}

/**
 * A time in microseconds since the epoch as ISO 8601 with six decimals, which
 * `timestamptz` keeps: messages said within one millisecond (a question and
 * its answer are recorded together) keep the order they were said in, which
 * is the order the cap drops them in.
 *
 * @example
 * ```ts
 * import { isoMicros } from "./memory_sql.ts";
 * isoMicros(1_700_000_000_123_456); // "2023-11-14T22:13:20.123456Z"
 * ```
 */
export function isoMicros(us: number): string {
  const iso = new Date(Math.floor(us / 1000)).toISOString();
  return `${iso.slice(0, -1)}${String(us % 1000).padStart(3, "0")}Z`;
}

/** The key an owner is indexed by. */
const key = (owner: string | null) => owner ?? "";

/**
 * A session's new expiry, for an `update … set expires_at =`: the retention
 * for a conversation, the resume window (plus the lease) for a plain session.
 *
 * @example
 * ```ts ignore
 * await sql`update agent_websocket.sessions set expires_at = ${expiresAt(sql, 165_000, 30 * 86_400_000)}`;
 * ```
 */
export function expiresAt(
  sql: postgres.Sql,
  expiryMs: number,
  retentionMs: number,
): postgres.PendingQuery<postgres.Row[]> {
  const now = Date.now();
  return sql`(case when conversation is not null
    then ${new Date(now + retentionMs)}::timestamptz
    else ${new Date(now + expiryMs)}::timestamptz end)`;
}

/**
 * The expiry of a session let go of: a conversation is kept for the
 * retention from now (its last activity); a plain session keeps the resume
 * window it has.
 *
 * @example
 * ```ts ignore
 * await sql`update agent_websocket.sessions set expires_at = ${releasedExpiry(sql, ms)}`;
 * ```
 */
export function releasedExpiry(
  sql: postgres.Sql,
  retentionMs: number,
): postgres.PendingQuery<postgres.Row[]> {
  return sql`(case when conversation is not null
    then ${new Date(Date.now() + retentionMs)}::timestamptz else expires_at end)`;
}

/**
 * The owner's live conversations, the most recently active first.
 *
 * @example
 * ```ts ignore
 * const list = await listConversations(sql, "user-1");
 * ```
 */
export async function listConversations(
  sql: postgres.Sql,
  owner: string | null,
): Promise<ConversationSummary[]> {
  const rows = await sql<{ name: string; messages: number; updated_at: Date }[]>`
    select s.conversation as name, s.updated_at,
      (select count(*) from agent_websocket.messages m where m.session_id = s.id)::int
        as messages
    from agent_websocket.sessions s
    where coalesce(s.owner, '') = ${key(owner)} and s.conversation is not null
      and s.expires_at > now()
    order by s.updated_at desc
    limit ${MAX_CONVERSATIONS_LISTED}`;
  return rows.map((r) => ({
    name: r.name,
    messages: r.messages,
    updated_at: new Date(r.updated_at).toISOString(),
  }));
}

/**
 * Messages of the owner's live conversations holding any of the terms, best
 * first (`ts_rank`, then the newest). The terms go through
 * `websearch_to_tsquery`, which never fails on what a user types.
 *
 * @example
 * ```ts ignore
 * const hits = await searchMessages(sql, "user-1", ["lisbon", "tram"], 10);
 * ```
 */
export async function searchMessages(
  sql: postgres.Sql,
  owner: string | null,
  terms: string[],
  limit: number,
): Promise<MemoryHit[]> {
  if (terms.length === 0) return [];
  const rows = await sql<
    {
      conversation: string;
      role: "user" | "assistant";
      content: string;
      created_at: Date;
      score: number;
    }[]
  >`
    with q as (select websearch_to_tsquery('simple', ${terms.join(" or ")}) as q)
    select m.conversation, m.role, left(m.content, ${HIT_CHARS + 1}) as content, m.created_at,
      ts_rank(m.search, q.q) as score
    from q, agent_websocket.messages m
    join agent_websocket.sessions s on s.id = m.session_id
    where coalesce(m.owner, '') = ${key(owner)} and m.search @@ q.q and s.expires_at > now()
    order by score desc, m.created_at desc
    limit ${limit}`;
  return rows.map((r) => ({
    conversation: r.conversation,
    role: r.role,
    content: hitContent(r.content),
    timestamp: new Date(r.created_at).toISOString(),
    score: Number(r.score),
  }));
}

/**
 * Empties the history and deletes the messages and the frames of one of the
 * owner's conversations, or of all, in one statement; returns the session ids
 * cleared. `cleared_seq` records where the clear took the replay log: a
 * resume from before it is told the frames were cleared (not lost), and a
 * frame up to it is never read again — also one the holder committed while
 * this statement waited for its lock (this statement's snapshot is older, so
 * it is left for the holder's next upkeep to delete).
 *
 * @example
 * ```ts ignore
 * const ids = await clearConversations(sql, "user-1", "trip-planning");
 * ```
 */
export async function clearConversations(
  sql: postgres.Sql,
  owner: string | null,
  name?: string,
): Promise<string[]> {
  // Rows are locked in id order, like every statement that changes several sessions.
  const rows = await sql<{ id: string }[]>`
    with c as (
      update agent_websocket.sessions set history = '[]'::jsonb, cleared_seq = last_seq
      where id in (
        select id from agent_websocket.sessions
        where coalesce(owner, '') = ${key(owner)} and conversation is not null
          ${name === undefined ? sql`` : sql`and conversation = ${name}`}
        order by id for no key update)
      returning id
    ), d as (
      delete from agent_websocket.messages where session_id in (select id from c)
    ), f as (
      delete from agent_websocket.frames where session_id in (select id from c)
    )
    select id from c`;
  return rows.map((r) => r.id);
}

/**
 * Extends the clear of conversations this instance holds over what it sent
 * before it heard of the clear (from its cached history): `cleared_seq`
 * becomes at least their last seq written and `upTo` (what waits to be
 * written), and their frames up to it are deleted.
 *
 * @example
 * ```ts ignore
 * await clearThrough(sql, instance, [{ id: "conv_…", upTo: 42 }]);
 * ```
 */
export function clearThrough(
  sql: postgres.Sql,
  instance: string,
  sessions: { id: string; upTo: number }[],
): postgres.PendingQuery<postgres.Row[]> {
  return sql`
    with v as (
      select * from unnest(
        ${sessions.map((s) => s.id)}::text[], ${sessions.map((s) => s.upTo)}::bigint[]
      ) as v(id, up_to)
    ), c as (
      update agent_websocket.sessions s
      set cleared_seq = greatest(s.cleared_seq, s.last_seq, v.up_to)
      from v
      where s.id = v.id and s.id in (
        select id from agent_websocket.sessions
        where id in (select id from v) and instance = ${instance} and conversation is not null
        order by id for no key update)
      returning s.id, s.cleared_seq
    )
    delete from agent_websocket.frames f using c
    where f.session_id = c.id and f.seq <= c.cleared_seq`;
}

/**
 * Records messages said in conversations this instance holds (fenced like
 * frames: a process that lost a session writes nothing of it); owner and
 * name are taken from the session's row.
 *
 * @example
 * ```ts ignore
 * await insertMessages(sql, instance, [{ session: "conv_…", messages: [...] }]);
 * ```
 */
export function insertMessages(
  sql: postgres.Sql,
  instance: string,
  batches: { session: string; messages: PendingMessage[] }[],
): postgres.PendingQuery<postgres.Row[]> {
  const rows = batches.flatMap((b) => b.messages.map((m) => ({ ...m, session: b.session })));
  // `at` goes as text: the client sends a timestamptz parameter through a Date, which
  // would lose the microseconds that order messages said within one millisecond.
  return sql`
    insert into agent_websocket.messages
      (id, session_id, owner, conversation, role, content, created_at)
    select u.id, s.id, s.owner, s.conversation, u.role, u.content, u.at::timestamptz
    from unnest(
      ${rows.map((r) => r.id)}::uuid[],
      ${rows.map((r) => r.session)}::text[],
      ${rows.map((r) => r.role)}::text[],
      ${rows.map((r) => r.content)}::text[],
      ${rows.map((r) => r.at)}::text[]
    ) as u(id, session_id, role, content, at)
    join agent_websocket.sessions s on s.id = u.session_id
    where s.instance = ${instance} and s.conversation is not null
    on conflict (id) do nothing`;
}

/**
 * Keeps the newest `cap` messages (by when they were said) of each of these
 * conversations, deleting at most `batch` older ones in all; returns how many
 * each had before, counted up to `cap + 1` (so over `cap` means it was over
 * and may still be). Each conversation costs a range of the
 * `messages_session_said` index no longer than `cap` (migration
 * 20261203000000_memory_cap.sql); no other conversation is read.
 *
 * @example
 * ```ts ignore
 * const counted = await trimMessages(sql, ["conv_…"], 5000, 5000);
 * ```
 */
export async function trimMessages(
  sql: postgres.Sql,
  sessions: string[],
  cap: number,
  batch: number,
): Promise<{ id: string; n: number }[]> {
  // The select sees the rows as they were before the delete (one snapshot).
  return await sql<{ id: string; n: number }[]>`
    with t as (select distinct id from unnest(${sessions}::text[]) as t(id)),
    cut as (
      select t.id, c.created_at, c.mid from t
      cross join lateral (
        select m.created_at, m.id as mid from agent_websocket.messages m
        where m.session_id = t.id
        order by m.created_at desc, m.id desc
        offset ${cap} limit 1) c
    ), gone as (
      delete from agent_websocket.messages where id in (
        select o.id from cut
        cross join lateral (
          select m.id from agent_websocket.messages m
          where m.session_id = cut.id and (m.created_at, m.id) <= (cut.created_at, cut.mid)
          order by m.created_at, m.id
          limit ${batch}) o
        limit ${batch})
    )
    select t.id, (
      select count(*) from (
        select 1 from agent_websocket.messages m where m.session_id = t.id limit ${cap + 1}) x
    )::int as n
    from t`;
}

/**
 * Deletes up to `batch` messages of expired sessions, so that deleting a
 * long conversation never cascades through all of its messages at once.
 *
 * @example
 * ```ts ignore
 * await expireMessages(sql, 5000);
 * ```
 */
export function expireMessages(
  sql: postgres.Sql,
  batch: number,
): postgres.PendingQuery<postgres.Row[]> {
  return sql`
    delete from agent_websocket.messages
    where id in (
      select m.id from agent_websocket.sessions s
      join agent_websocket.messages m on m.session_id = s.id
      where s.expires_at < now()
      limit ${batch})`;
}
