"""Evidence checks: logs, claims, byte denominators, significance (read-only analyses of shipped data)."""
