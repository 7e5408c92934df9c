-- Issue 15: a plugin library may suggest its isolation mode, and the operator's choice always
-- wins, so the store records whether the operator chose (`isolation_by_operator`; an id the
-- operator never set runs in the mode its file suggests, else in the host). Before this
-- migration only an operator could have stored `process` (the default was `in_process`).
ALTER TABLE plugins ADD COLUMN isolation_by_operator BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE plugins SET isolation_by_operator = TRUE WHERE isolation = 'process';
-- Limits of the plugin's child process in process mode, set by the operator (NULL: the
-- host's default from --process-max-* and --call-timeout-ms).
ALTER TABLE plugins ADD COLUMN limit_memory_mb BIGINT;
ALTER TABLE plugins ADD COLUMN limit_open_files BIGINT;
ALTER TABLE plugins ADD COLUMN limit_processes BIGINT;
ALTER TABLE plugins ADD COLUMN limit_call_deadline_ms BIGINT;
