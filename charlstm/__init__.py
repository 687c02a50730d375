"""charlstm: character-level recurrent language models that explain themselves.

    import charlstm
    model = charlstm.load()                       # newest run; or a .pt file or run folder
    print(model.generate(prime="\\n", num_samples=5, stop="\\n", seed=1))
    run = charlstm.train("corpus.txt", max_time="5m")

Importing the package must stay cheap (no torch), so that `charlstm --help` is instant:
`load`, `train` and `Model` come from `charlstm.api`, imported on first use.

`charlstm.train` is the function above even though a module of the same name exists: the
package's class keeps the attribute, so importing the trainer module (which Python would
otherwise bind over it) does not replace the function. Import that module's contents with
`from charlstm.train import Trainer`.
"""

import sys
import types

__version__ = "0.1.0"
__all__ = ["Model", "__version__", "load", "train"]


def __getattr__(name: str):
    if name in ("Model", "load"):
        from charlstm import api

        return getattr(api, name)
    raise AttributeError(f"module 'charlstm' has no attribute {name!r}")


class _Package(types.ModuleType):
    @property
    def train(self):
        from charlstm.api import train

        return train

    @train.setter
    def train(self, module) -> None:
        """Python binds the submodule charlstm.train here when it loads; the function stays."""


sys.modules[__name__].__class__ = _Package
