"""One function per operation, shared by the command line and the flows."""
