DROP TABLE kv;
DROP TABLE events;
DROP TABLE config_history;
DROP TABLE plugins;
