"""Trainers: the head on cached features, end-to-end fine-tuning, batch samplers, optimizer state, checkpoints."""
