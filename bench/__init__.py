"""Load harness: simulated participants and benchmarks that print their figures."""
