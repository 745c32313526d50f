"""videor1: reinforcement learning for video reasoning in multimodal LLMs (Video-R1, T-GRPO)."""

__version__ = "0.1.0"
