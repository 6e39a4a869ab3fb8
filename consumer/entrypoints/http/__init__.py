"""HTTP API (DESIGN §7): batch look-ups, statistics and submission for HTTP-only clients."""
