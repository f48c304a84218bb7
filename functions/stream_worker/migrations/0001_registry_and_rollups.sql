-- The device registry, hourly rollups per device and metric, and the application users.
-- Applied by stream_worker.migrate as the database's admin user, in one transaction, under an advisory lock.

-- Every device: the API client that owns it (NULL: seen on the stream but never registered), and what the
-- worker has seen of it. gaps_seen counts the sequence numbers skipped between a device's newly counted
-- readings, in the order the worker counts them.
CREATE TABLE devices (
    device_id     text PRIMARY KEY,
    client_id     text,
    registered_at timestamptz,
    first_seen    timestamptz,
    last_seen     timestamptz,
    firmware      text,
    last_sequence bigint,
    gaps_seen     bigint NOT NULL DEFAULT 0
);
CREATE INDEX devices_by_client ON devices (client_id) WHERE client_id IS NOT NULL;

-- Per device, metric and UTC hour. Kept for years: nothing expires them.
CREATE TABLE hourly_rollups (
    device_id text        NOT NULL,
    metric    text        NOT NULL,
    hour      timestamptz NOT NULL CHECK (hour = date_trunc('hour', hour)),
    count     bigint      NOT NULL CHECK (count > 0),
    sum       numeric     NOT NULL,
    min       numeric     NOT NULL,
    max       numeric     NOT NULL,
    PRIMARY KEY (device_id, hour, metric)
);

-- The readings already counted into the rollups, by their identity (device and millisecond), so that a
-- replayed or re-delivered reading is counted once. A reading can only come again while its record is on the
-- stream, so rows older than the stream's retention (plus a margin) are pruned by the worker.
CREATE TABLE counted_readings (
    device_id  text        NOT NULL,
    measured_at timestamptz NOT NULL,
    counted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, measured_at)
);
CREATE INDEX counted_readings_by_age ON counted_readings (counted_at);

-- The worker's archive on EFS: one file per committed batch of newly counted readings (stream_worker.archive).
-- A batch's file is written as pending before its transaction commits and published after; a pending file
-- whose batch never committed is deleted, so every counted reading is in exactly one published file.
CREATE SEQUENCE archive_batch_ids;
CREATE TABLE archive_batches (
    batch_id     bigint      PRIMARY KEY,
    readings     integer     NOT NULL CHECK (readings > 0),
    committed_at timestamptz NOT NULL DEFAULT now()
);

-- The application users: the worker writes, the query function reads. On RDS they log in with IAM auth
-- tokens (the rds_iam role); elsewhere (the tests' PostgreSQL) that role does not exist. Roles belong to the
-- server, not the database, so they may exist already (another database on the same server).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'iot_worker') THEN
        CREATE ROLE iot_worker LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'iot_reader') THEN
        CREATE ROLE iot_reader LOGIN;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
        GRANT rds_iam TO iot_worker, iot_reader;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO iot_worker, iot_reader;
GRANT SELECT, INSERT, UPDATE ON devices, hourly_rollups TO iot_worker;
GRANT SELECT, INSERT, DELETE ON counted_readings TO iot_worker;
GRANT SELECT, INSERT ON archive_batches TO iot_worker;
GRANT USAGE ON SEQUENCE archive_batch_ids TO iot_worker;
GRANT SELECT ON hourly_rollups TO iot_reader;
