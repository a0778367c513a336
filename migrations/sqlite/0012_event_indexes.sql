-- Fewer indexes on the conversation event log (SQLite flavour; migrations/postgres holds the same).
-- Every message writes about three events, and each index is one more B-tree insert on the
-- single write path. Every read of the log goes by (conversation_id, seq), which the unique
-- index conversation_events_seq covers; the two indexes below served no query left.

-- (conversation_id, id): the order by id within a conversation is the order by seq.
DROP INDEX conversation_events_conversation;
-- (message_id): delivery events are read back by (conversation_id, seq) now.
DROP INDEX conversation_events_message;
