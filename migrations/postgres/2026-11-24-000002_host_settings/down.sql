DROP TABLE host_settings;
