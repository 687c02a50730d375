"""charlstm: character-level recurrent language models that explain themselves.

Importing the package must stay cheap (no torch), so that `charlstm --help` is instant;
the library modules import torch themselves.
"""

__version__ = "0.1.0"
