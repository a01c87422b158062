"""detect's sweeps over the weights, compiled with numba (SPEC.md §6.2-6.3, §6.8): the Gram sweep
(attest.forensics.compiled.gram), the residual sweep (.residual; with the Gram sums in the same pass where a recipe
is already known), the refinement's pass (.refine), and what they do to single elements (.elements).
The sweeps are nearly all of detect's work; as array-library calls they were ~30 passes over every chunk, and detect
took 5.5x the time of hashing the same bytes. Compiled, the work per element is a few dozen instructions in
registers."""

from attest.forensics.compiled.elements import stored_value
from attest.forensics.compiled.gram import gram_sweep
from attest.forensics.compiled.refine import refine_sweep
from attest.forensics.compiled.residual import residual_sweep

__all__ = ["gram_sweep", "refine_sweep", "residual_sweep", "stored_value"]
