-- The live stream's single-use tickets (no session token in a URL), and people's names for actors.
-- depends: 0004.access

-- A ticket opens one live stream (EventSource cannot send an Authorization header, and a token in
-- a URL ends up in access logs). It is good once and for 60 s; only a SHA-256 of it is kept, with a
-- snapshot of the caller it stands for; the stream re-checks the session token itself.
CREATE TABLE stream_ticket (
    ticket_hash   bytea PRIMARY KEY,
    token_id      bigint NOT NULL REFERENCES api_token(id),
    principal     jsonb NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX stream_ticket_expires_idx ON stream_ticket (expires_at);

-- The name a person is known by, for an actor string of the alert history ('user:<id>:<username>'
-- from the API, 'doctor:<id>' from snoozes): the doctor's name when the login is a doctor's, else
-- the username; anything else ('system', 'device:…', a CLI name) as it is.
CREATE FUNCTION actor_name(p_actor text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT coalesce(d.name, u.username)
         FROM app_user u LEFT JOIN doctor d ON d.id = u.doctor_id
         WHERE u.id = CASE WHEN p_actor ~ '^user:[0-9]{1,15}:'
                           THEN split_part(p_actor, ':', 2)::bigint END),
        (SELECT d.name FROM doctor d
         WHERE d.id = CASE WHEN p_actor ~ '^doctor:[0-9]{1,15}$'
                           THEN split_part(p_actor, ':', 2)::bigint END),
        p_actor)
$$;
