"""in-toto Statement v1 with SLSA Provenance v1 predicates: models, exact payload bytes, strict parsing."""

from attest.statements.models import (
    BUILD_TYPES,
    PAYLOAD_TYPE,
    SLSA_PROVENANCE_V1,
    STATEMENT_TYPE,
    STEP_KINDS,
    BuildDefinition,
    Builder,
    BuildMetadata,
    Provenance,
    ProvenanceStatement,
    ResourceDescriptor,
    RunDetails,
    Statement,
    StepKind,
    Subject,
)
from attest.statements.parse import StatementError, parse_provenance, parse_statement, statement_bytes

__all__ = [
    "BUILD_TYPES",
    "PAYLOAD_TYPE",
    "SLSA_PROVENANCE_V1",
    "STATEMENT_TYPE",
    "STEP_KINDS",
    "BuildDefinition",
    "BuildMetadata",
    "Builder",
    "Provenance",
    "ProvenanceStatement",
    "ResourceDescriptor",
    "RunDetails",
    "Statement",
    "StatementError",
    "StepKind",
    "Subject",
    "parse_provenance",
    "parse_statement",
    "statement_bytes",
]
