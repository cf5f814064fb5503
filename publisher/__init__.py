"""aptship publisher: validate .debs, keep channel state, render and sign indexes.

This package never imports Flask or ``repo_server``.  Heavy dependencies (boto3,
python-gnupg, python-debian's deb parser) are imported lazily where they are used so
that the CLI starts fast.
"""

__version__ = "0.1.0"
