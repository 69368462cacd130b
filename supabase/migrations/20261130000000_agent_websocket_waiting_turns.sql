-- A turn that waits for people (a human's approval, a client's tool result) is
-- written down, so that the process taking a session over after a crash or a
-- shutdown carries it on instead of cutting it off. Null: nothing waits.
alter table agent_websocket.sessions add column if not exists suspended jsonb;
