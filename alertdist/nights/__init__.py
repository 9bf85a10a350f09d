"""What a night is and what it owns: its date (`dates`), its topics and their names (`topics`), the record
that opens and closes it (`state`), and the reconciliation of everything it published (`report`)."""
