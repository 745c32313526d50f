"""Supervised fine-tuning (the cold start before RL) with assistant-only loss."""
