"""MirrorMaker 2 from the producing cluster to the public one (the two-tier distribution ZTF runs).

- `config`: the dedicated-mode properties file (identity names, which topics, exactly-once source support).
- `process`: start, stop and report the MirrorMaker 2 java process.
- `syncs`: MirrorMaker's offset syncs (upstream offset -> downstream offset) and the mirror's lag.
- `closing`: close a night on the public cluster with its own offsets once every alert has arrived.
"""
