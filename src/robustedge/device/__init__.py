"""On-device harness (stdlib + numpy + one interpreter only; no torch, no tensorflow)."""
