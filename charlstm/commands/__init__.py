"""One module per group of `charlstm` commands; importing them registers them on `app.app`.

Each command parses its options, calls one library function and renders the result; torch is
imported inside the commands so `charlstm --help` stays fast. The commands import the app
(`app.py`) and the options they share (`options.py`), never `cli.py`, which imports them.
"""
