"""HTTP API (docs/contract.md, HTTP API): batch look-ups, statistics and submission for
HTTP-only clients."""
