"""Imported first when an entry file runs as a script (``python core/<entry>.py``, the way the
released shell scripts call them): Python then puts this folder at ``sys.path[0]``, where its
modules would shadow top-level names and the repository's packages are not importable. Put the
repository root there instead. Not used when the module is imported (``import core.entry``)."""
import sys
from pathlib import Path

_HERE, _ROOT = Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_ROOT)
elif str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))
