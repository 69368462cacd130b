-- MEMORY_MAX_MESSAGES: a conversation keeps its newest messages. Upkeep trims a
-- conversation written to by reading its messages newest first down to the cap; this
-- index makes that one index range (index-only) instead of reading and sorting every
-- message of it. `id` breaks ties, so the order is total and a trim is exact.
create index if not exists messages_session_said
  on agent_websocket.messages (session_id, created_at, id);

-- The new index leads with session_id: it serves all the old one did (counting,
-- clearing and expiring one conversation's messages, the cascade from sessions).
drop index if exists agent_websocket.messages_session;
