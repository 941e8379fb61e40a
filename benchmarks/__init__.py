"""The benchmark scripts (the repository's top-level benchmarks/, installed as ``diffrl.benchmarks``); run one with
``diffrl benchmark NAME``."""
