-- Crash isolation: where each plugin id's code runs, chosen by the operator
-- (POST /api/core/plugins/{id}/isolation). Every existing plugin stays in the host.
ALTER TABLE plugins ADD COLUMN isolation TEXT NOT NULL DEFAULT 'in_process'
    CHECK (isolation IN ('in_process', 'process'));
