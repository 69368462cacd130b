-- Conversations and memory (SESSION_STORE=postgres). A conversation is a session
-- with a name (`?conversation=<name>`); its id is derived from its owner and name.
-- It is kept for CONVERSATION_RETENTION_DAYS after its last activity instead of the
-- short resume window, and what the user and the assistant said in it is written
-- to `messages`, where the `search_memory` command and tool find it.

create schema if not exists agent_websocket;

-- Null for a plain session.
alter table agent_websocket.sessions add column if not exists conversation text;

-- One conversation per name and user (owner null: auth off, one shared namespace).
-- Also the index behind listing a user's conversations and clearing them by name.
create unique index if not exists sessions_owner_conversation
  on agent_websocket.sessions ((coalesce(owner, '')), conversation)
  where conversation is not null;

create table if not exists agent_websocket.messages (
  -- Made by the function, so a write retried after a lost answer inserts nothing twice.
  id uuid primary key,
  session_id text not null references agent_websocket.sessions (id) on delete cascade,
  -- Copied from the session, so a search reads one table.
  owner text,
  conversation text not null,
  role text not null check (role in ('user', 'assistant')),
  content text not null,
  created_at timestamptz not null default now(),
  -- The 'simple' configuration lower-cases words and does nothing else: no
  -- stemming and no stop words. Users write in every language, and a language's
  -- stemmer (e.g. 'english') would mangle the others and drop words they search
  -- for; 'simple' matches exactly what was said, in any language, at the price of
  -- "run" not finding "running".
  search tsvector generated always as (to_tsvector('simple', content)) stored
);

create index if not exists messages_search on agent_websocket.messages using gin (search);
-- A user's messages, newest first (listing, and a search narrowed to one user).
create index if not exists messages_owner
  on agent_websocket.messages ((coalesce(owner, '')), created_at desc);
-- Counting, clearing and expiring one conversation's messages.
create index if not exists messages_session on agent_websocket.messages (session_id);

alter table agent_websocket.messages enable row level security;

-- As for the other tables: even if someone exposes the schema, these roles get nothing.
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'anon') then
    revoke all on agent_websocket.messages from anon;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    revoke all on agent_websocket.messages from authenticated;
  end if;
end
$$;
