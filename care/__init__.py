"""Care relationships: institutions, doctors and duty desks, contracts, agreements, policies."""
