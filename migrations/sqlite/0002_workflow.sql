-- The back-office workflow (SQLite flavour; migrations/postgres holds the same schema).
-- Same conventions as 0001: TEXT ids (UUID v7), BIGINT millisecond timestamps, JSON as TEXT.

-- A back-office task: a refund, an order, a cancellation, an address change, a return, a
-- callback request or a custom type from config. It belongs to a contact, usually to the
-- conversation it came from, and where it applies to an order.
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    -- The lifecycle (src/workflow/model.rs): open -> awaiting_approval -> approved | rejected
    -- -> in_progress -> done | failed, and cancelled.
    status TEXT NOT NULL CHECK (status IN ('open', 'awaiting_approval', 'approved', 'rejected',
        'in_progress', 'done', 'failed', 'cancelled')),
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    -- Where the customer hears about changes. NULL for a task with no conversation.
    conversation_id TEXT REFERENCES conversations (id),
    order_id TEXT,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- The role an approver must hold (set by the policy when a person must decide).
    approver_role TEXT,
    -- Bumped by every change; task_events holds one row per version.
    version BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- Listing is newest first (ids are time-ordered) with optional filters.
CREATE INDEX tasks_status ON tasks (status, id);
CREATE INDEX tasks_kind ON tasks (kind, id);
CREATE INDEX tasks_queue ON tasks (queue, id);
CREATE INDEX tasks_contact ON tasks (contact_id, id);
CREATE INDEX tasks_order ON tasks (order_id, id);
-- At most one open refund per order: a second one collides here, whichever instance tries.
CREATE UNIQUE INDEX tasks_one_open_refund ON tasks (order_id)
    WHERE kind = 'refund' AND status IN ('open', 'awaiting_approval', 'approved', 'in_progress');

-- The audit trail: every change of a task, who or what made it, when, why, and the task
-- before and after (JSON). The unique (task_id, version) is also the optimistic lock: two
-- changes made from the same version collide, and the later one is refused and retried.
CREATE TABLE task_events (
    -- Also the webhook-id of the webhook announcing the change.
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks (id),
    version BIGINT NOT NULL,
    -- 'task.created' or 'task.status_changed'.
    kind TEXT NOT NULL,
    -- 'customer:<contact>', 'api_key:<id>', 'operator:<name>', 'backoffice:<name>', 'policy'.
    actor TEXT NOT NULL,
    reason TEXT,
    from_status TEXT,
    to_status TEXT NOT NULL,
    before_state TEXT,
    after_state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (task_id, version)
);

-- Idempotency keys of task creation: a replay with the same request gets the stored response,
-- a different request with the same key is refused. Scope: the API key (or conversation).
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    -- Hex SHA-256 of the canonical request.
    request_hash TEXT NOT NULL,
    task_id TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);

-- REST API keys. Only a SHA-256 of the key is kept: the key is shown once, at creation.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    -- Space-separated: tasks:read tasks:write tasks:approve admin.
    scopes TEXT NOT NULL,
    -- Space-separated roles the policies ask for (finance, ...).
    roles TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- The built-in order source (seeded from config/demo/orders.json in the demo).
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    -- Lower case; how an order is matched to a contact (contact_emails).
    customer_email TEXT NOT NULL,
    -- placed, paid, shipped, delivered, cancelled, returned.
    status TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    placed_at BIGINT NOT NULL,
    delivered_at BIGINT,
    items TEXT NOT NULL DEFAULT '[]',
    updated_at BIGINT NOT NULL
);
CREATE INDEX orders_customer ON orders (customer_email, placed_at);

-- Which shop customer a contact is: an email vouched for by a trusted party (an admin API key,
-- the shop's back end, an operator), never by what a customer typed. A customer may act on the
-- orders whose customer_email is linked to the contact of their verified conversation.
CREATE TABLE contact_emails (
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    email TEXT NOT NULL,
    -- Who linked it: 'api_key:<id>', 'operator:<name>'.
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (contact_id, email)
);
CREATE INDEX contact_emails_email ON contact_emails (email);

-- Status updates the back office pushed in, by webhook-id: a redelivery changes nothing.
CREATE TABLE inbound_webhooks (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    received_at BIGINT NOT NULL
);

-- Outbox rows caused by a task (customer notices, webhooks), so that the API can show a task's
-- deliveries and dead letters.
ALTER TABLE outbox ADD COLUMN task_id TEXT;
CREATE INDEX outbox_task ON outbox (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX outbox_kind_status ON outbox (kind, status, id);
