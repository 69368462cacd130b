-- clear_memory forgets a conversation's frames too, not only its history and
-- messages: a device that resumes it from before the clear must not be sent the
-- old answers again. The clear deletes its frames in the same statement and
-- records here the last seq it took; a frame up to it is never replayed, and a
-- resume from before it gets `resume_gap` saying the conversation was cleared
-- (not that frames were lost).
alter table agent_websocket.sessions add column if not exists cleared_seq bigint not null default 0;
