"""The reliability matrix: every fault a run can meet, each a test (see docs/reliability.md)."""
