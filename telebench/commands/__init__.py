"""What each CLI command does, end to end: it wires the layers below; cli.py only parses options."""
