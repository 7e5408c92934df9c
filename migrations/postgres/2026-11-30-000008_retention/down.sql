DROP INDEX events_by_at;
DROP TABLE changes_pruned;
DROP TABLE sync_hosts;
