-- Durable sessions for the agent_websocket edge function (SESSION_STORE=postgres).
-- A session's metadata and history live in `sessions`; every frame it emitted,
-- for replay on resume, in `frames`. Both sit in their own schema, which the
-- Data API does not expose, and have row-level security on with no policies, so
-- the anon and authenticated roles can read nothing. The function connects
-- with the database's own credentials (SUPABASE_DB_URL), which bypass RLS.

create schema if not exists agent_websocket;

create table if not exists agent_websocket.sessions (
  id text primary key,
  -- The Supabase user id (`sub`) that owns the session; null when auth is off.
  owner text,
  -- The highest seq written to `frames`.
  last_seq bigint not null default 0,
  history jsonb not null default '[]'::jsonb,
  -- Queries accepted but not yet ended (in flight or queued): ended as
  -- `interrupted` by whichever instance takes the session over after a crash.
  open_queries text[] not null default '{}',
  -- The instance that holds the session, and when it last said it was alive.
  instance text,
  heartbeat_at timestamptz not null default now(),
  -- After this the session may be deleted by any instance's sweeper.
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index if not exists sessions_expires_at on agent_websocket.sessions (expires_at);
create index if not exists sessions_instance on agent_websocket.sessions (instance);

create table if not exists agent_websocket.frames (
  session_id text not null references agent_websocket.sessions (id) on delete cascade,
  seq bigint not null,
  -- The frame exactly as it was sent, so a replay is byte for byte the same.
  frame text not null,
  created_at timestamptz not null default now(),
  primary key (session_id, seq)
);

alter table agent_websocket.sessions enable row level security;
alter table agent_websocket.frames enable row level security;

-- Belt and braces: even if someone exposes the schema, these roles get nothing.
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'anon') then
    revoke all on schema agent_websocket from anon;
    revoke all on all tables in schema agent_websocket from anon;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    revoke all on schema agent_websocket from authenticated;
    revoke all on all tables in schema agent_websocket from authenticated;
  end if;
end
$$;
