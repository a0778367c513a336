-- The agent console (PostgreSQL flavour; migrations/sqlite holds the same schema): staff accounts and
-- their sessions, teams with business hours and assignment rules, canned replies, labels and
-- satisfaction ratings on conversations, and merged contacts.

-- A team works one queue: a conversation handed to it is owned by 'queue:<name>'.
CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- 1: only the team's members (and admins) see its queue and its conversations.
    restricted BIGINT NOT NULL DEFAULT 0,
    -- How queued conversations reach people: 'manual' (claimed), 'round_robin' or
    -- 'least_loaded' among the members who are online.
    assignment TEXT NOT NULL DEFAULT 'manual',
    -- Business hours as JSON: {"timezone": "Europe/Madrid", "mon": "09:00-18:00", ...}; '{}'
    -- is always open.
    hours TEXT NOT NULL DEFAULT '{}',
    -- Out of hours a handed-over conversation waits in the queue ('queue') or goes back to
    -- the bot ('bot'); the customer is told when people are back either way.
    out_of_hours TEXT NOT NULL DEFAULT 'queue',
    -- Round robin: the member given the last conversation.
    last_assigned TEXT,
    created_at BIGINT NOT NULL
);

-- People who sign in to the console. Only an argon2id hash of the password is kept.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    -- Lower case; the sign-in name.
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    -- 'agent' (conversations), 'backoffice' (task queues) or 'admin' (everything).
    role TEXT NOT NULL CHECK (role IN ('agent', 'backoffice', 'admin')),
    -- Back-office roles, space-separated ('finance logistics'): the task queues a person works
    -- and the approvals they may decide, as the workflow's policies name them.
    roles TEXT NOT NULL DEFAULT '',
    -- 'online', 'away' or 'offline'; automatic assignment picks online agents seen lately.
    availability TEXT NOT NULL DEFAULT 'offline',
    last_seen_at BIGINT,
    disabled_at BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE team_members (
    team_id TEXT NOT NULL REFERENCES teams (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id);

-- Console sessions. The cookie holds a random token; only its SHA-256 is kept, beside the
-- session's CSRF token. Signing out everywhere deletes every row of the user.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Replies agents insert by shortcut; {{customer.name}}, {{agent.name}}, ... are filled in.
CREATE TABLE canned_replies (
    id TEXT PRIMARY KEY,
    shortcut TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Labels agents put on a conversation, as a JSON array of strings (changes are events too).
ALTER TABLE conversations ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
-- Satisfaction: when the customer was asked after the conversation was resolved, their score
-- (1 to 5) and comment.
ALTER TABLE conversations ADD COLUMN rating_asked_at BIGINT;
ALTER TABLE conversations ADD COLUMN rating BIGINT;
ALTER TABLE conversations ADD COLUMN rating_comment TEXT;

-- A contact merged into another (a Telegram user found to be an email customer): its
-- identities, emails, conversations and tasks now belong to merged_into; the row stays so
-- that old references still resolve.
ALTER TABLE contacts ADD COLUMN merged_into TEXT;
