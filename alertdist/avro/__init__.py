"""The Avro codec for ZTF alert packets: one face (`codec`: decode, encode, peek) over its internals.

- `codec`: the public face; the rest of the system imports only this (and `container` for framing, `arrow` and
  `arrow_decoder` for the column layout).
- `container`: Avro Object Container File framing (header, blocks, varints).
- `encoder`, `plans`: the compiled encoder behind `codec.encode`.
- `writer_schemas`: writer schemas parsed once per distinct schema text.
- `record_check`: strict value checks before encoding.
- `plausible`: the one check that an alert's identity (jd, candid, pid, programid, objectId) can be computed with.
- `arrow`: the alert <-> Arrow column layout (Parquet archive, columnar filters), both ways.
- `arrow_decoder`: packets to tables of that layout, fast (DataFusion's Avro reader).
"""
