-- People are shown by a display name, never by their login name: a username is half of a login
-- and stays on the server. Actors recorded from now on are opaque ('user:<id>'); older records
-- ('user:<id>:<username>') are shown through actor_ref, which drops the username.
-- depends: 0014.doctor_app_login

ALTER TABLE app_user ADD COLUMN display_name text
    CHECK (display_name IS NULL OR length(display_name) BETWEEN 1 AND 100);

-- The opaque form of an actor: 'user:<id>' for a person's login, anything else as it is.
CREATE FUNCTION actor_ref(p_actor text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_actor ~ '^user:[0-9]{1,15}(:|$)'
                THEN 'user:' || split_part(p_actor, ':', 2) ELSE p_actor END
$$;

-- The name a person is known by: the account's display name, else its doctor's (or duty desk's)
-- name, else the opaque id; 'doctor:<id>' (snoozes) the doctor's name; anything else ('system',
-- 'device:…', a CLI name) as it is. Never the username.
CREATE OR REPLACE FUNCTION actor_name(p_actor text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT coalesce(u.display_name, d.name, 'user:' || u.id)
         FROM app_user u LEFT JOIN doctor d ON d.id = u.doctor_id
         WHERE u.id = CASE WHEN p_actor ~ '^user:[0-9]{1,15}(:|$)'
                           THEN split_part(p_actor, ':', 2)::bigint END),
        (SELECT d.name FROM doctor d
         WHERE d.id = CASE WHEN p_actor ~ '^doctor:[0-9]{1,15}$'
                           THEN split_part(p_actor, ':', 2)::bigint END),
        actor_ref(p_actor))
$$;

-- An actor as a caller is shown it: people see names, platforms the opaque id.
CREATE FUNCTION actor_shown(p_actor text, p_person boolean) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_person THEN actor_name(p_actor) ELSE actor_ref(p_actor) END
$$;
