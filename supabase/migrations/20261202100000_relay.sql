-- Sockets of one session on several processes (conversations, a reconnect that
-- lands on another process): what the processes need to pass between them.
--
-- Messages between the function's processes travel over LISTEN/NOTIFY, which
-- takes at most 8000 bytes. A bigger one (a long answer's final frame on its
-- way to a socket attached to another process, a large client frame on its way
-- to the process holding the session) is stored here and the NOTIFY carries
-- its id. Rows are read within moments and deleted after a minute by the
-- function's own upkeep.

create schema if not exists agent_websocket;

create table if not exists agent_websocket.bus_payloads (
  id bigint generated always as identity primary key,
  payload text not null,
  created_at timestamptz not null default now()
);

create index if not exists bus_payloads_created_at on agent_websocket.bus_payloads (created_at);

alter table agent_websocket.bus_payloads enable row level security;

-- As for the other tables: even if someone exposes the schema, these roles get nothing.
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'anon') then
    revoke all on agent_websocket.bus_payloads from anon;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    revoke all on agent_websocket.bus_payloads from authenticated;
  end if;
end
$$;

-- The name of a conversation (`?conversation=`); null for a plain session.
alter table agent_websocket.sessions add column if not exists conversation text;

-- Counts the claims of a session: a process letting go names the claim it lets go of,
-- so a release held up while the database was away cannot undo a later claim.
alter table agent_websocket.sessions add column if not exists claims bigint not null default 0;
