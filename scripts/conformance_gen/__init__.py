"""The parts of scripts/generate_conformance.py: byte writers and keys, folders, and the vectors of each kind."""
