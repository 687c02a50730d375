"""One module per group of `charlstm` commands; importing them registers them on `cli.app`.

Each command parses its options, calls one library function and renders the result; torch is
imported inside the commands so `charlstm --help` stays fast.
"""
