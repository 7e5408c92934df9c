DROP TABLE plugin_files;
DROP TABLE plugin_blob_chunks;
DROP TABLE plugin_blobs;
