"""eldercare: IoT home-monitoring backend for elderly residents (shared plumbing and the CLI)."""
