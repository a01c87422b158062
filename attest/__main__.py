from attest.cli import entry

entry()
