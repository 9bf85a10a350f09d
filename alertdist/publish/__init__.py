"""Publishing a night: where packets come from (`sources`) and how each reaches its topic once (`publisher`)."""
