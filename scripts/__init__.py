"""Experiment harnesses, run from the repository root as ``python -m scripts.<name>``
(Table 1, the ablations, the figures, the quickstart table, the benchmarks), and the shell
scripts that call them and the entry points. See the README's pipeline section."""
