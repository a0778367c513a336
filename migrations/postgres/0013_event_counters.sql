-- Each conversation's last event number, given out by a counter (PostgreSQL flavour;
-- migrations/sqlite holds the same). Only PostgreSQL uses it: SQLite's one writer numbers
-- events from the log, where nothing races it.
-- PostgreSQL runs a script as one statement on one snapshot, from many connections at once:
-- two scripts that read a conversation's last number from the log take the same one, and one
-- fails on conversation_events_seq at commit and is written again whole. A script takes its
-- numbers here first instead, with an upsert that waits on the row, so two writers of one
-- conversation wait for each other. `taken`: how many the last upsert took, so that it can
-- return the number before them.
-- Not filled from the log: the upsert never gives out less than the log's last number, so a
-- conversation's row starts at its first numbered write, and writes that number from the log
-- in a transaction of their own (opening or reopening a conversation) leave it behind
-- harmlessly. No foreign key: every script that takes numbers writes events with them, and
-- conversation_events checks their conversation.
CREATE TABLE conversation_event_counters (
    conversation_id TEXT NOT NULL PRIMARY KEY,
    seq BIGINT NOT NULL,
    taken BIGINT NOT NULL
);
