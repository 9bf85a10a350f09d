"""The `alertdist` command: `main` parses and dispatches to one module per concern in `commands/`, which parse
arguments, call the operation in `alertdist.jobs` and print."""
