-- The conversation router's tables (PostgreSQL flavour; migrations/sqlite holds the same schema).
-- Timestamps are BIGINT milliseconds since the Unix epoch and ids are TEXT (UUID v7), so that
-- one SQL text in src/store serves both backends through sqlx's Any driver.

-- A person, whatever channels they use.
CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    display_name TEXT,
    created_at BIGINT NOT NULL
);

-- How each channel knows a contact. One row per (channel, platform user); a later merge can
-- point identities of several channels at one contact.
CREATE TABLE contact_identities (
    channel TEXT NOT NULL,
    platform_user_id TEXT NOT NULL,
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    -- 1 when the platform vouches for the identity (signed web chat session, Telegram user id).
    verified BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (channel, platform_user_id)
);
CREATE INDEX contact_identities_contact ON contact_identities (contact_id);

-- A conversation lives on one channel thread and has exactly one owner at a time:
-- 'bot', 'queue:<name>' or 'agent:<id>'. status mirrors the owner's kind, plus 'resolved'.
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    channel TEXT NOT NULL,
    thread TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('bot', 'queued', 'agent', 'resolved')),
    owner TEXT NOT NULL,
    language TEXT,
    -- The assistant's memory of the conversation (intent in progress, slots), as JSON.
    assistant_state TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- At most one open conversation per channel thread; a resolved one stays as history.
CREATE UNIQUE INDEX conversations_open_thread ON conversations (channel, thread)
    WHERE status <> 'resolved';
CREATE INDEX conversations_contact ON conversations (contact_id);
CREATE INDEX conversations_status ON conversations (status, updated_at);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    seq BIGINT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    author_kind TEXT NOT NULL CHECK (author_kind IN ('customer', 'bot', 'agent', 'system')),
    author_id TEXT,
    text TEXT NOT NULL,
    attachments TEXT NOT NULL DEFAULT '[]',
    channel TEXT NOT NULL,
    -- The platform's own id of an inbound message.
    platform_message_id TEXT,
    -- For replies: the message id they answer.
    in_reply_to TEXT,
    platform_sent_at BIGINT,
    created_at BIGINT NOT NULL,
    -- Inbound only: when the conversation's owner took the message. NULL means the router still
    -- owes it a turn, which is how a restart finds work a crash interrupted.
    handled_at BIGINT,
    -- The dedupe key at the door.
    UNIQUE (channel, platform_message_id),
    -- Position in the conversation: MAX(seq) + 1 at insert; two writers racing for the same
    -- seq (PostgreSQL, several instances) collide here and the loser retries.
    UNIQUE (conversation_id, seq)
);
CREATE INDEX messages_unhandled ON messages (conversation_id, seq)
    WHERE direction = 'in' AND handled_at IS NULL;

-- Append-only log of every state change of a conversation (opened, handed off, assigned,
-- resolved). Reports, the console's live view and audits read it.
CREATE TABLE conversation_events (
    id BIGSERIAL PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);
CREATE INDEX conversation_events_conversation ON conversation_events (conversation_id, id);

-- Everything that leaves Switchboard goes through here, written in the same transaction as the
-- decision to send it. A worker delivers, retries with backoff, and dead-letters.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    -- 'message' (to a channel); later issues add webhooks.
    kind TEXT NOT NULL,
    channel TEXT,
    message_id TEXT,
    -- Rows with the same lane (a conversation) are delivered one after another, in id order.
    lane TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    -- A claimed row is reserved until then, for the instance named in locked_by.
    locked_until BIGINT,
    locked_by TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    done_at BIGINT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
