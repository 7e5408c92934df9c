//! Table definitions matching `migrations/sqlite/` and `migrations/postgres/` (kept by hand; `diesel print-schema` prints the same).

diesel::table! {
    plugins (id) {
        id -> Text,
        desired_state -> Text,
        config -> Nullable<Text>,
        config_version -> BigInt,
        last_file -> Nullable<Text>,
        last_sha256 -> Nullable<Text>,
        last_version -> Nullable<Text>,
        updated_at_ms -> BigInt,
        isolation -> Text,
        isolation_by_operator -> Bool,
        limit_memory_mb -> Nullable<BigInt>,
        limit_open_files -> Nullable<BigInt>,
        limit_processes -> Nullable<BigInt>,
        limit_call_deadline_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    config_history (seq) {
        seq -> Integer,
        plugin_id -> Text,
        version -> BigInt,
        config -> Text,
        actor -> Text,
        at_ms -> BigInt,
    }
}

diesel::table! {
    events (seq) {
        seq -> Integer,
        at_ms -> BigInt,
        plugin_id -> Nullable<Text>,
        kind -> Text,
        actor -> Text,
        details -> Text,
    }
}

diesel::table! {
    kv (plugin_id, key) {
        plugin_id -> Text,
        key -> Text,
        value -> Binary,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    host_settings (key) {
        key -> Text,
        value -> Text,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    models (repo) {
        repo -> Text,
        revision -> Text,
        commit_sha -> Nullable<Text>,
        path -> Text,
        source -> Text,
        files -> Text,
        total_bytes -> BigInt,
        plugin_id -> Nullable<Text>,
        installed_at_ms -> BigInt,
    }
}

diesel::table! {
    changes (id) {
        id -> BigInt,
        kind -> Text,
        subject -> Text,
        origin -> Text,
        at_ms -> BigInt,
    }
}

diesel::table! {
    plugin_blobs (sha256) {
        sha256 -> Text,
        size -> BigInt,
        chunks -> BigInt,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    plugin_blob_chunks (sha256, seq) {
        sha256 -> Text,
        seq -> BigInt,
        data -> Binary,
    }
}

diesel::table! {
    plugin_files (file) {
        file -> Text,
        sha256 -> Text,
        removed -> Bool,
        origin -> Text,
        updated_at_ms -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(plugin_blobs, plugin_files);
diesel::allow_tables_to_appear_in_same_query!(plugin_blob_chunks, plugin_files);

diesel::table! {
    sync_hosts (origin) {
        origin -> Text,
        applied -> BigInt,
        seen_at_ms -> BigInt,
    }
}

diesel::table! {
    changes_pruned (id) {
        id -> Integer,
        pruned_through -> BigInt,
    }
}
