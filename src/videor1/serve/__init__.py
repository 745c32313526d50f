"""`videor1 serve`: an OpenAI-compatible chat-completions server for Qwen-VL checkpoints, with video."""
