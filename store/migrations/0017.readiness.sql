-- Which processes are ready for devices (store/readiness.py): ingest once the broker has
-- acknowledged every subscription, the alert engine once it LISTENs for device events. A process
-- upserts its rows when ready and refreshes heartbeat_at while it stays so; it deletes them on exit,
-- and a killed one's rows simply go stale. `eldercare run` and /readyz read them.
-- depends: 0016.login_attempts

CREATE TABLE readiness (
    component     text NOT NULL,
    host          text NOT NULL,
    pid           integer NOT NULL,
    ready_at      timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    PRIMARY KEY (component, host, pid)
);
