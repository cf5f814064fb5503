"""End-to-end tests: real dh-virtualenv builds, chroots, apt-get."""
