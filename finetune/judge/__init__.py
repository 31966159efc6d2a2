"""Judge: sandboxed execution, execution-verified preference data."""
