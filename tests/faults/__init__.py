"""Fault injection: kill, cut, black-hole, restart; heal; then check the oracle."""
