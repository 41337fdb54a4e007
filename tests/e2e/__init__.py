"""End-to-end tests: the real CLI on real processes (a package, so that test file names
may repeat those of the unit tests)."""
