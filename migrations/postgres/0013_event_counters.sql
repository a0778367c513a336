-- Each conversation's last event number, given out by a counter (PostgreSQL flavour; migrations/sqlite holds the same).
-- A script that writes events first adds how many it writes to its conversation's counter
-- and numbers them from what the counter then holds, so two writers of one conversation wait
-- for each other on this row. Reading the last number from the log cannot do that on
-- PostgreSQL, which runs a script as one statement on one snapshot: two scripts read the same
-- number, and one fails on conversation_events_seq at the end and is written again.
-- No foreign key: every script that takes numbers here writes events with them, and
-- conversation_events checks their conversation (another check would lock its row again).
CREATE TABLE conversation_event_counters (
    conversation_id TEXT NOT NULL PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO conversation_event_counters (conversation_id, seq)
    SELECT conversation_id, MAX(seq) FROM conversation_events GROUP BY conversation_id;
