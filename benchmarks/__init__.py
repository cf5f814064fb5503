"""aptship benchmarks against Debian's reprepro and aptly: ``python -m benchmarks``."""
