"""Checkpoints: one file holding everything needed to predict again, and nothing that can run code.

Explained in the appendix "When things go wrong" (``book/appendix_troubleshooting.ipynb``).

A checkpoint bundles the model kind, its :class:`~mmoe_annotated.model.ModelConfig`, the
fitted :class:`~mmoe_annotated.features.FeatureEncoder` (as JSON), the weights and the
package version. Four promises:

* **Loading never runs code.** Python's pickle can execute anything on load, and a
  checkpoint is exactly the kind of file people download and pass around. The file is
  read with ``torch.load(..., weights_only=True)``, which only rebuilds tensors, numbers,
  strings, lists and dicts; config and encoder travel as a JSON string, not as objects.
* **A crash never leaves a corrupt checkpoint in place.** The bytes go to a temporary
  file in the same directory, are flushed to disk, and only then renamed over the target
  with ``os.replace`` (atomic on one file system): readers see the old file or the new
  one, never half of one.
* **A damaged file never loads.** A SHA-256 checksum over everything the file holds (the
  manifest's exact text with kind, config, encoder, versions and ``extra``, and every
  tensor's name, dtype, shape and bytes) is written beside them and compared before
  anything is built: one changed byte that still parses (an encoder value, a config
  number) is refused, not loaded as a different model.
* **Problems are named.** A truncated or damaged file, a checkpoint written by an
  incompatible version, weights that do not match the config, or a checkpoint of another
  config than the model it is loaded into each raise :class:`CheckpointError` saying so;
  so do paths that are not regular files (a FIFO, a device) and unreadable ones. A save
  that finds no space left on the device says so with ``errno.ENOSPC``.

A save that was killed leaves its temporary file ``.<name>.<pid>.<hex>.tmp`` behind; the
next save to the same target deletes such files once their process has ended and they
have not been written for :data:`STALE_AFTER_S` seconds. A file replaced keeps its
permission bits; a new one gets ``0o666`` less the umask, like any file ``open()`` makes.
"""
from __future__ import annotations

from .._moved import stage_getattr
from .files import STALE_AFTER_S
from .load import Checkpoint, load_checkpoint
from .save import save_checkpoint
from .verify import FORMAT, FORMAT_VERSION, READABLE_VERSIONS, CheckpointError

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "FORMAT",
           "FORMAT_VERSION", "READABLE_VERSIONS", "STALE_AFTER_S"]

# Release 0.1 had a module checkpoint.py; the names it held that this stage does not list still
# resolve, with a DeprecationWarning, for one release (mmoe_annotated._moved).
__getattr__ = stage_getattr(__name__, ("mmoe_annotated.checkpoint.save", "mmoe_annotated.checkpoint.load", "mmoe_annotated.checkpoint.verify", "mmoe_annotated.checkpoint.files"))
