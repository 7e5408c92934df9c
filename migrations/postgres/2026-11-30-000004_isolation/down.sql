ALTER TABLE plugins DROP COLUMN isolation;
