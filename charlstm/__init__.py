"""charlstm: character-level recurrent language models that explain themselves.

    import charlstm
    model = charlstm.load()                       # newest run; or a .pt file or run folder
    print(model.generate(prime="\\n", num_samples=5, stop="\\n", seed=1))
    run = charlstm.train("corpus.txt", max_time="5m")

Importing the package must stay cheap (no torch), so that `charlstm --help` is instant:
`load`, `train` and `Model` come from `charlstm.api`, imported on first use.
"""

__version__ = "0.1.0"
__all__ = ["Model", "__version__", "load", "train"]


def __getattr__(name: str):
    if name in ("Model", "load", "train"):
        from charlstm import api

        return getattr(api, name)
    raise AttributeError(f"module 'charlstm' has no attribute {name!r}")
