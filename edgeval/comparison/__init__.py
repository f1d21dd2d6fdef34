"""The comparison: planning what fits a memory budget, the adaptive race between arms, the verdict."""
