"""Notification channels, each a small module behind one interface (base.Channel)."""
