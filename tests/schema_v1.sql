-- Schema 1 of github-repo-users, as loader.DDL created it (tests/test_relations.py migrates it).

CREATE TABLE IF NOT EXISTS github_repository (
        repo_id bigint PRIMARY KEY,
        full_name text NOT NULL,
        status text NOT NULL,
        unavailable_relations text[] NOT NULL DEFAULT '{}',
        relation_status jsonb,
        relation_state jsonb,
        stargazer_count integer,
        fork_count integer,
        watcher_count integer,
        first_seen_at timestamptz NOT NULL DEFAULT now(),
        fetched_at timestamptz NOT NULL
    );

CREATE TABLE IF NOT EXISTS github_repo_request (
        requested_name text PRIMARY KEY,
        repo_id bigint,
        status text NOT NULL,
        detail text,
        checked_at timestamptz NOT NULL
    );

CREATE TABLE IF NOT EXISTS github_user (
        user_id bigint PRIMARY KEY,
        node_id text,
        login text NOT NULL,
        type text,
        name text,
        company text,
        blog text,
        location text,
        email text,
        bio text,
        twitter_username text,
        public_repos integer,
        followers integer,
        following integer,
        created_at timestamptz,
        updated_at timestamptz,
        profile_fetched_at timestamptz,
        email_checked_at timestamptz,
        fetched_at timestamptz NOT NULL
    );

CREATE TABLE IF NOT EXISTS github_repo_user (
        repo_id bigint NOT NULL REFERENCES github_repository (repo_id),
        user_id bigint NOT NULL REFERENCES github_user (user_id),
        relations text[] NOT NULL,
        contributions integer,
        starred_at timestamptz,
        forked_at timestamptz,
        first_seen_at timestamptz NOT NULL,
        last_seen_at timestamptz NOT NULL,
        PRIMARY KEY (repo_id, user_id),
        CHECK (relations <@ ARRAY['contributor', 'forker', 'stargazer', 'watcher']::text[])
    );

CREATE INDEX IF NOT EXISTS github_repo_user_user_idx ON github_repo_user (user_id);

CREATE TABLE IF NOT EXISTS github_collect_run (
        run_key text PRIMARY KEY,
        dag_id text,
        run_id text,
        logical_date timestamptz,
        status text NOT NULL,
        counts jsonb,
        started_at timestamptz,
        finished_at timestamptz
    );

CREATE TABLE IF NOT EXISTS github_schema_version (version integer PRIMARY KEY);

ALTER TABLE github_repository ADD COLUMN IF NOT EXISTS relation_state jsonb;

INSERT INTO github_schema_version (version) VALUES (1);
