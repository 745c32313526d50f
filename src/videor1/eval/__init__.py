"""Evaluation: answering held-out questions and scoring them with the rewards' own parsers."""
