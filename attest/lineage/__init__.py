"""Lineage: where attestations are stored in a model folder (store), and walking them to trusted roots."""
