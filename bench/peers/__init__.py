"""Other implementations of batchops' job, measured in the same benchmark run as batchops.

They are measuring instruments, not product code: small, plain, and dev-only (the `bench`
extra installs what they need).
"""
