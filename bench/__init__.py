"""On-demand benchmarks: ``python -m bench`` (see docs/performance.md). Not part of the tests."""
