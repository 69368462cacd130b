-- Per-user limits that hold across processes (SESSION_STORE=postgres): what each
-- user spent per UTC day (USER_DAILY_TOKEN_BUDGET, USER_DAILY_COST_BUDGET) and how
-- many queries each was let through per UTC minute (RATE_LIMIT_PER_MINUTE). Every
-- process adds its own counts once per sync (about a second) and reads the totals
-- back. The user key is the Supabase user id, or `addr:<client address>` without
-- auth (for the query rate without auth: the session id, as the local limit does).

create schema if not exists agent_websocket;

create table if not exists agent_websocket.usage (
  user_key text not null,
  day date not null,
  -- Prompt + completion tokens, as the model reported them.
  tokens bigint not null default 0,
  -- OpenRouter credits (usage.cost).
  cost numeric not null default 0,
  updated_at timestamptz not null default now(),
  primary key (user_key, day)
);

-- Rows older than 31 days are deleted by the function, in batches.
create index if not exists usage_day on agent_websocket.usage (day);

create table if not exists agent_websocket.rate (
  user_key text not null,
  -- Minutes since the Unix epoch (UTC).
  minute bigint not null,
  queries integer not null default 0,
  primary key (user_key, minute)
);

create index if not exists rate_minute on agent_websocket.rate (minute);

alter table agent_websocket.usage enable row level security;
alter table agent_websocket.rate enable row level security;

-- As for the first tables: even if someone exposes the schema, these roles get nothing.
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'anon') then
    revoke all on agent_websocket.usage, agent_websocket.rate from anon;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    revoke all on agent_websocket.usage, agent_websocket.rate from authenticated;
  end if;
end
$$;
