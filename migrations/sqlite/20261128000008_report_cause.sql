-- The cause of a SESSION_GONE resume (issue 19 point 3) recorded with the report id's outcome, so
-- that a repeat of the report answers with the cause its first delivery was given ('' for none).
ALTER TABLE report ADD COLUMN cause TEXT NOT NULL DEFAULT '';
