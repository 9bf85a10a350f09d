"""Sub-commands of `alertdist`, one module per concern; each exposes `register(subparsers)`."""
