"""Set-up shared by every chapter: the book's plot style and quiet third-party warnings.

Warnings raised by transformers, peft and tqdm about their own deprecations and
defaults would otherwise be rendered as stderr in the book; hydralib's own
warnings stay visible.

Example
-------
>>> from hydralib.notebook import setup_chapter
>>> setup_chapter()
"""

from __future__ import annotations

import warnings

THIRD_PARTY = r"(transformers|peft|tqdm|accelerate|huggingface_hub)(\..*)?$"


def quiet_third_party_warnings() -> None:
    """Ignore warnings issued from inside transformers, peft, tqdm, accelerate and huggingface_hub."""
    warnings.filterwarnings("ignore", module=THIRD_PARTY)
    try:  # tqdm's notebook bar needs ipywidgets; the book shows plain text bars instead
        from tqdm import TqdmExperimentalWarning, TqdmWarning

        warnings.filterwarnings("ignore", category=TqdmWarning)
        warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
    except ImportError:  # pragma: no cover
        pass


def setup_chapter() -> None:
    """Book style for figures and quiet third-party warnings; call once at the top of a chapter."""
    from . import plotting

    quiet_third_party_warnings()
    plotting.use_book_style()
