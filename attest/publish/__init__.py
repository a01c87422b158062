"""Publishing lineage to the people who act on it: model cards, audit reports (HTML/JSON), CycloneDX ML-BOMs."""
