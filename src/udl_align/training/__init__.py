"""Training: the config (the one home of every default), the pair sources and the loop."""
