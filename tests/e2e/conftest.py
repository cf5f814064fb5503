"""Fixtures of the end-to-end tier.

``hello_deb`` (session): ``hello_deb(version) -> Path``, a real dh-virtualenv .deb of
the hello-service fixture, built once per version (see ``tests/e2e/dhv.py``).
"""

from tests.e2e.dhv import hello_deb as hello_deb
