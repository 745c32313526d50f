"""Reinforcement learning for video reasoning: advantages, losses, rewards, rollouts and the T-GRPO trainer."""
