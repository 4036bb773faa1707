"""`eldercare simulate`: demo residents whose devices publish realistic vitals and episodes.

Generation is pure (vitals, episodes, plan: a seeded `random.Random` in, messages out); provisioning
(fleet), the MQTT clients (clients), the display and the pacing loop (run) are the I/O edges.
"""
