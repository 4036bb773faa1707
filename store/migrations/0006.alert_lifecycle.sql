-- Alert life cycle: escalation rounds (a worsening or a new SOS press restarts the policy's tiers) and
-- webhooks scoped to an institution (emergency contacts' phone numbers go only to those platforms).
-- depends: 0004.access

-- When the current round's tiers count from (tier N is due at escalation_base + after_s), and which
-- round it is (idempotency keys of later rounds differ from the first's).
ALTER TABLE alert ADD COLUMN escalation_base timestamptz;
ALTER TABLE alert ADD COLUMN escalation_round integer NOT NULL DEFAULT 0;
-- Alerts in flight: a fall that is still pending starts its tiers when its window ends; one that
-- opened after its window started them then; everything else at opened_at.
UPDATE alert SET escalation_base = CASE
    WHEN state = 'pending' THEN next_tier_at
    ELSE coalesce((SELECT min(t.at) FROM alert_transition t
                   WHERE t.alert_id = alert.id AND t.action = 'opened'), opened_at)
END
WHERE state <> 'resolved';

-- NULL: a platform for every institution's alerts, which never receives emergency contacts' phone
-- numbers; set: that institution's alerts only, including the contacts to call.
ALTER TABLE webhook_subscription ADD COLUMN institution_id bigint REFERENCES institution(id);
CREATE INDEX webhook_subscription_institution_idx ON webhook_subscription (institution_id) WHERE active;

-- Contact deliveries through platforms that have not gone out yet: checked every tick, so that
-- the duty desk is asked to call when no platform delivers (alerts/service.py).
CREATE INDEX notification_contacts_unsent_idx ON notification (created_at)
    WHERE recipient_kind = 'webhook' AND state <> 'sent' AND idempotency_key LIKE '%:contacts:%';
