"""The faces: the command line, terminal rendering, markdown reports and the demo."""
