"""Files and programs corpus v2 needs, and the Debian / PyPI package that provides each one.

`require(...)` checks them before a song is rendered, so a machine without a resource fails at once with an error
that names the missing file or program and the package to install (see scripts/install.sh), never halfway through
a corpus or with a silent fallback.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

#: Recorded drum kits (SF2, one preset each: bank 0, program 0, General-MIDI key map), Debian avldrums.lv2-soundfont.
AVL_KITS = {
    "black_pearl": "/usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2",
    "red_zeppelin": "/usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2",
}
#: MuseScore General, uncompressed SF2 (the SF3 of `musescore-general-soundfont` is slow to load in every process).
MUSESCORE = os.environ.get("XUMX_MUSESCORE_SF2", "/usr/share/sounds/sf2/MuseScore_General_Full.sf2")
#: The HTS US-English female voice of festival.
FESTIVAL_VOICE_DIR = "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts"
FESTIVAL_VOICE = "voice_cmu_us_slt_arctic_hts"

#: resource -> (kind, path or name, package that provides it)
RESOURCES = {
    "avl_black_pearl": ("file", AVL_KITS["black_pearl"], "apt-get install avldrums.lv2-soundfont"),
    "avl_red_zeppelin": ("file", AVL_KITS["red_zeppelin"], "apt-get install avldrums.lv2-soundfont"),
    "hydrogen_kits": ("file", "/usr/share/hydrogen/data/drumkits/ForzeeStereo/drumkit.xml",
                      "apt-get install hydrogen-drumkits"),
    "musescore_general": ("file", MUSESCORE, "apt-get install musescore-general-soundfont-lossless"),
    "fluidr3": ("file", "/usr/share/sounds/sf2/FluidR3_GM.sf2", "apt-get install fluid-soundfont-gm"),
    "festival": ("program", "festival", "apt-get install festival"),
    "festival_slt_hts": ("file", FESTIVAL_VOICE_DIR, "apt-get install festvox-us-slt-hts"),
    "espeak_ng": ("program", "espeak-ng", "apt-get install espeak-ng"),
    "pedalboard": ("module", "pedalboard", "pip install pedalboard==0.9.26"),
    "pyloudnorm": ("module", "pyloudnorm", "pip install pyloudnorm==0.2.0"),
}


class MissingResource(RuntimeError):
    """A file, program or Python module corpus v2 needs is not installed."""


def missing(names=None) -> list[str]:
    """Human-readable lines for each resource of `names` (default: all) that is absent here."""
    out = []
    for name in names or RESOURCES:
        kind, what, package = RESOURCES[name]
        if kind == "file":
            ok = os.path.exists(what)
        elif kind == "program":
            ok = shutil.which(what) is not None
        else:
            ok = importlib.util.find_spec(what) is not None
        if not ok:
            out.append(f"{kind} {what} is missing ({package})")
    return out


def require(names=None) -> None:
    """Raise :class:`MissingResource` listing every absent resource of `names` (default: all of corpus v2)."""
    lines = missing(names)
    if lines:
        raise MissingResource("corpus v2 cannot run: " + "; ".join(lines) + " - or run scripts/install.sh")
