ALTER TABLE plugins DROP COLUMN limit_call_deadline_ms;
ALTER TABLE plugins DROP COLUMN limit_processes;
ALTER TABLE plugins DROP COLUMN limit_open_files;
ALTER TABLE plugins DROP COLUMN limit_memory_mb;
ALTER TABLE plugins DROP COLUMN isolation_by_operator;
