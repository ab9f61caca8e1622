"""Droid Head training bed: teacher -> student distillation for the robot head's router and style models.

The pipeline, one subpackage per stage (docs/architecture.md): teacher -> training -> export -> deploy -> runtime;
standins/ holds the offline test doubles (never imported by the runtime), bases/ the offline base models.
`python -m distill <verb>` runs any stage (`python -m distill --help` lists the verbs).
"""

from pathlib import Path

__version__ = "0.2.0"

# The checkout the package runs from (the demo, the benchmarks and the tests work on a checkout).
REPO_ROOT = Path(__file__).resolve().parent.parent
