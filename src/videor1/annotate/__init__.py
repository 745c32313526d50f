"""`videor1 annotate`: <think> rationales from a teacher model, filtered by the reward rules (Video-R1-COT data)."""
