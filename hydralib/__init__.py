"""hydralib: analyse and merge low-rank adapters (LoRA, VeRA) of many tasks.

Start with :func:`load_adapters` (PEFT adapter directories) or
:meth:`AdapterSet.from_factors` (tensors); everything else takes an
:class:`AdapterSet`.
"""

from .adapters import AdapterSet, ModuleInfo, load_adapters
from .errors import AdapterError, HydraError, OutputExistsError

__version__ = "0.1.0"

__all__ = ["AdapterSet", "ModuleInfo", "load_adapters", "AdapterError", "HydraError", "OutputExistsError"]
