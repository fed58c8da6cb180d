"""The conformance suite: one module per paper section, each test marked with its clause."""
