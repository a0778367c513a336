-- The channel platform (SQLite flavour; migrations/postgres holds the same schema): named
-- channel instances, platform ids both ways, durable cursors, richer messages, typed
-- conversation state with an integer version, and a per-conversation event sequence.

-- An integer version for optimistic locking: every change of the row adds one, and a writer
-- that read version N commits only if the row is still at N. (Timestamps let two changes in
-- the same millisecond pass each other's guard.)
ALTER TABLE conversations ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

-- Quick-reply choices offered with an outbound message, as JSON [{"id","label"}].
ALTER TABLE messages ADD COLUMN choices TEXT NOT NULL DEFAULT '[]';
-- Channel-specific fields of a message (an email's subject and headers), as a JSON object of
-- typed extensions keyed by name, instead of a column per platform.
ALTER TABLE messages ADD COLUMN extensions TEXT NOT NULL DEFAULT '{}';
-- messages.platform_message_id now also holds the platform's receipt id of a delivered reply,
-- so that (channel, platform id) leads to our message in both directions.

-- The platform's receipt for a delivered row.
ALTER TABLE outbox ADD COLUMN platform_message_id TEXT;

-- Every event gets the next number of its conversation: dense from 1, so a subscriber that
-- saw N knows exactly what it missed. The unique index settles two writers racing for a
-- number (the loser retries).
ALTER TABLE conversation_events ADD COLUMN seq BIGINT;
-- The message a message event is about (stored, delivered, failed); its text, author and
-- platform id are read from the message row, not copied.
ALTER TABLE conversation_events ADD COLUMN message_id TEXT;
UPDATE conversation_events SET seq = (
    SELECT COUNT(*) FROM conversation_events e
    WHERE e.conversation_id = conversation_events.conversation_id
      AND e.id <= conversation_events.id
);
UPDATE conversation_events SET kind = 'owner.changed'
    WHERE kind IN ('conversation.handoff', 'conversation.assigned', 'conversation.resolved');
CREATE UNIQUE INDEX conversation_events_seq ON conversation_events (conversation_id, seq);
CREATE INDEX conversation_events_message ON conversation_events (message_id)
    WHERE message_id IS NOT NULL;

-- Durable checkpoints of channel instances (a Telegram update offset, an IMAP mailbox's
-- UIDVALIDITY and last UID). Written with compare-and-set on version.
CREATE TABLE channel_cursors (
    channel TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (channel, key)
);
