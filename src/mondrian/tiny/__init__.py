"""Tiny random-weight checkpoints of the real Qwen-VL architectures (see checkpoint.py)."""
