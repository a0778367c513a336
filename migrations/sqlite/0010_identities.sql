-- How far a contact can be reached on each channel (SQLite flavour; migrations/postgres holds
-- the same schema).

-- The person's handle on the platform (Telegram's @username), beside the stable id; it may
-- change, and is refreshed when the person opens a conversation.
ALTER TABLE contact_identities ADD COLUMN username TEXT;

-- Threads a platform said can no longer be written to (Telegram's 403: the person blocked
-- the bot). Deliveries to the thread are given up at once, without a call, until the customer
-- writes on it again; agents see the mark on the contact.
CREATE TABLE unreachable_threads (
    channel TEXT NOT NULL,
    thread TEXT NOT NULL,
    -- What the platform said.
    reason TEXT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (channel, thread)
);
