"""One module per group of `charlstm` commands; importing them registers them on `cli.app`."""
