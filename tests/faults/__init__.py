"""Fault injection (issue 5): kill, cut, black-hole, restart; heal; then check the oracle."""
