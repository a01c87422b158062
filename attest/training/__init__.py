"""Verifiable training: reference loops that record a transcript (checkpoints every K steps with weights, optimizer
and RNG state; a commitment to every batch), and a verifier that checks the chain and replays sampled segments."""
