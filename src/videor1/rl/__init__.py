"""Reinforcement learning for video reasoning: advantages, losses and KL (`grpo`), rollouts and the trainer."""
