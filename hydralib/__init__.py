"""hydralib: analyse and merge low-rank adapters (LoRA, VeRA) of many tasks.

Start with :func:`load_adapters` (PEFT adapter directories) or
:meth:`AdapterSet.from_factors` (tensors); everything else takes an
:class:`AdapterSet`. Adapters larger than memory: :func:`load_adapters_lazy`
(a :class:`LazyAdapterSet` reads each module from disk when used) or
:func:`open_adapters` (lazy above a size on disk).

Layers: a package imports only from itself and from those before it in
errors, atomic, threads, tables, stats, plotting, notebook, presets, manifest ->
peft_io, adapters, lazy, hydralib, storage, runtime -> synthetic -> analysis ->
merge -> heads, compress -> bench -> suite -> commands, cli
(``tests/test_layers.py`` checks every import, and that there is no import cycle).
"""

from .adapters import AdapterSet, ModuleInfo, load_adapters
from .errors import AdapterError, HydraError, OutputExistsError
from .lazy import LazyAdapterSet, load_adapters_lazy, open_adapters

__version__ = "0.1.0"

__all__ = ["AdapterSet", "ModuleInfo", "load_adapters", "LazyAdapterSet", "load_adapters_lazy", "open_adapters",
           "AdapterError", "HydraError", "OutputExistsError"]
