"""The command line's pieces: run options and presets, axis and numeral parsing, the plan, the run lifecycle, and one module per subcommand."""
