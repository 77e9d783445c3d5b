"""Save, load and export HydraOpt results: the old import path of :mod:`hydralib.merge.hydraopt.result`.

The bundle format and its functions live with the result classes in
:mod:`hydralib.merge.hydraopt.result` (so the two modules no longer import
each other); every name is importable from here as before.
"""

from .hydraopt.result import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    META_NAME,
    TENSORS_NAME,
    bundle_storage,
    bundle_tensors,
    export_peft,
    load_bundle,
    save_bundle,
)

__all__ = ["TENSORS_NAME", "META_NAME", "BUNDLE_FORMAT", "BUNDLE_VERSION", "bundle_tensors", "save_bundle", "load_bundle",
           "bundle_storage", "export_peft"]
