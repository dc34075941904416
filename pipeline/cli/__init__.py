"""The command line: `apigen-mt` (main) and its commands, one module per group;
each parses options, calls the library and maps its errors to exit codes."""
